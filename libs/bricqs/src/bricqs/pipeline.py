"""The one processing path of accepted events, shared by the processor and the sync endpoint:
lock the participants, store events and facts, apply mechanics, all in the caller's
transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from bricqs.mechanics.apply import RuleSource, apply_mechanics
from bricqs.mechanics.rounds import Effects
from bricqs.schemas import Envelope
from bricqs.storage.events import StoreResult, store_events, upsert_catalog
from bricqs.storage.locks import lock_participants
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Conn


@dataclass(frozen=True)
class Processed:
    """What processing a batch did: storage outcomes and mechanics effects by event id."""

    stored: StoreResult
    effects: dict[str, Effects]


async def process_envelopes(
    conn: Conn,
    envelopes: Sequence[Envelope],
    *,
    idempotency_ttl: timedelta,
    rules_for: RuleSource,
    report: bool = True,
    standings: Standings | None = None,
) -> Processed:
    """Store `envelopes` and run mechanics for the facts this call inserted.

    `report=False` leaves `effects` and `stored.stored_at` empty, for callers that do not
    answer with them.
    `standings` is where leaderboard standings are mirrored (None: PostgreSQL only).

    In pipeline mode: statements whose results are not read (the inserts and upserts
    without RETURNING) are sent without waiting, and PostgreSQL runs them while Python
    works on what comes next; reading a result waits for everything sent before it.
    """
    async with conn.pipeline():
        await lock_participants(
            conn, [(e.project_id, e.environment, e.participant_id) for e in envelopes]
        )
        stored = await store_events(
            conn, envelopes, idempotency_ttl=idempotency_ttl, catalog=False, stored_times=report
        )
        effects = (
            await apply_mechanics(
                conn,
                rules_for,
                stored.facts,
                report=report,
                standings=standings,
                historical={e.event_id for e in stored.inserted if e.historical},
            )
            if stored.facts
            else {}
        )
        # Last: every writer of the tenant updates the same catalog rows, whose locks are
        # then held only for the commit, not for the mechanics too.
        if stored.inserted:
            await upsert_catalog(conn, stored.inserted)
    return Processed(stored, effects)
