"""Outcomes made outside an event's round — manual actions, reward claims, the clock,
backfills — recorded the way a round records its own: the facts stored, the webhooks they
owe enqueued in the same transaction, and the rules chained on them run."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bricqs.ids import new_fact_id
from bricqs.mechanics.apply import RuleSource, apply_mechanics
from bricqs.schemas import Fact
from bricqs.storage.events import insert_facts
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Conn, Tenant
from bricqs.storage.webhook_outbox import enqueue_outcomes


def system_fact(
    tenant: Tenant,
    participant_id: str,
    fact_type: str,
    properties: dict[str, Any],
    at: datetime,
    origin: str,
) -> Fact:
    """A new outcome of `participant_id` at `at`; `origin` is what caused it (a manual
    action's id, a claim, a backfill job), in the place of an event id."""
    return Fact(
        fact_id=new_fact_id(),
        fact_type=fact_type,
        project_id=tenant.project_id,
        environment=tenant.environment,
        participant_id=participant_id,
        event_id=origin,
        properties=properties,
        occurred_at=at,
    )


async def record_outcomes(
    conn: Conn,
    tenant: Tenant,
    rules_for: RuleSource,
    facts: Sequence[Fact],
    *,
    standings: Standings | None = None,
    notify: bool = True,
) -> None:
    """Store `facts` (one tenant's, new), owe their webhooks unless `notify` is False (a
    quiet backfill: then the chained outcomes owe none either), and run the rules chained on
    them. The caller holds the participants' locks."""
    if not facts:
        return
    await insert_facts(conn, facts)
    if notify:
        await enqueue_outcomes(conn, tenant, facts)
    await apply_mechanics(conn, rules_for, facts, report=False, standings=standings, notify=notify)
