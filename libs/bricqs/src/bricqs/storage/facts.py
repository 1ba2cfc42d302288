"""Reading a participant's facts (they are written with their events: see events.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from bricqs.schemas import Fact
from bricqs.storage.tenants import Conn, Tenant


class FactRow(NamedTuple):
    """A stored fact, as a participant's history shows it."""

    fact_id: str
    fact_type: str
    event_id: str
    properties: dict[str, Any]
    occurred_at: datetime
    created_at: datetime


async def list_facts(
    conn: Conn,
    tenant: Tenant,
    participant_id: str,
    *,
    after: str | None,
    fact_type: str | None,
    limit: int,
) -> list[FactRow]:
    """A participant's facts (of one type, if given), newest first, after a cursor (a fact
    id)."""
    cursor = await conn.execute(
        "SELECT fact_id, fact_type, event_id, properties, occurred_at, created_at FROM facts"
        " WHERE project_id = %s AND environment = %s AND participant_id = %s"
        " AND (%s::text IS NULL OR fact_id < %s) AND (%s::text IS NULL OR fact_type = %s)"
        " ORDER BY fact_id DESC LIMIT %s",
        (
            tenant.project_id,
            tenant.environment,
            participant_id,
            after,
            after,
            fact_type,
            fact_type,
            limit,
        ),
    )
    return [FactRow(*row) for row in await cursor.fetchall()]


async def facts_of_types(
    conn: Conn, tenant: Tenant, participant_ids: Sequence[str], fact_types: Sequence[str]
) -> list[Fact]:
    """Every stored fact of `participant_ids` whose type is one of `fact_types` (what a
    backfill recomputes a definition's criteria from)."""
    if not participant_ids or not fact_types:
        return []
    cursor = await conn.execute(
        "SELECT fact_id, fact_type, participant_id, event_id, properties, occurred_at FROM facts"
        " WHERE project_id = %s AND environment = %s AND participant_id = ANY(%s)"
        " AND fact_type = ANY(%s)",
        (tenant.project_id, tenant.environment, list(participant_ids), list(fact_types)),
    )
    return [
        Fact(
            fact_id=row[0],
            fact_type=row[1],
            project_id=tenant.project_id,
            environment=tenant.environment,
            participant_id=row[2],
            event_id=row[3],
            properties=row[4],
            occurred_at=row[5],
        )
        for row in await cursor.fetchall()
    ]
