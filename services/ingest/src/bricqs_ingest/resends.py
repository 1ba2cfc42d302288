"""Resends Redis may have forgotten: keyed events older than Redis' memory of keys are
checked against PostgreSQL, which holds keys for the whole retention window.

Redis remembers a key for IDEMPOTENCY_TTL_SECONDS; PostgreSQL for
IDEMPOTENCY_RETENTION_DAYS. A resend after Redis forgot would be queued with a new
event_id and silently dropped by the processor. Only an event whose own `timestamp` is
older than Redis' memory can be such a resend (a retry carries the timestamp it was first
sent with), so only those pay a PostgreSQL lookup: un-keyed events, and keyed events of
the last day, never do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

from prometheus_client import Counter
from psycopg import Error as DatabaseError
from psycopg_pool import PoolTimeout

from bricqs.schemas import Envelope
from bricqs.storage.idempotency import find_key_holders
from bricqs_ingest.context import IngestContext
from bricqs_ingest.publisher import AlreadyHeld

log = logging.getLogger("bricqs.ingest")

LOOKUPS = Counter(
    "bricqs_ingest_idempotency_lookups_total",
    "Keyed events older than Redis' memory of keys, checked in PostgreSQL, by outcome"
    " (held: answered as a duplicate; free: queued; unavailable: queued unchecked).",
    ["outcome"],
)
for _outcome in ("held", "free", "unavailable"):
    LOOKUPS.labels(_outcome)


def may_be_forgotten(envelope: Envelope, redis_memory: timedelta) -> bool:
    """Whether Redis may have forgotten this event's key: it is keyed and happened
    longer ago than Redis remembers keys."""
    return (
        envelope.idempotency_key is not None
        and envelope.occurred_at < envelope.received_at - redis_memory
    )


async def held_in_postgres(
    ctx: IngestContext, envelopes: Sequence[Envelope]
) -> dict[str, AlreadyHeld]:
    """For the envelopes whose key PostgreSQL still holds: the holder, by the envelope's
    event_id. Envelopes of one project and environment (one request's).

    Best effort within IDEMPOTENCY_LOOKUP_TIMEOUT_MS: if PostgreSQL cannot answer, the
    events are queued as before (and counted), so a database outage does not stop async
    ingest.
    """
    settings = ctx.settings
    redis_memory = timedelta(seconds=settings.idempotency_ttl_seconds)
    late = [e for e in envelopes if may_be_forgotten(e, redis_memory)]
    if not late:
        return {}
    keys = sorted({e.idempotency_key for e in late if e.idempotency_key is not None})
    try:
        async with (
            asyncio.timeout(settings.idempotency_lookup_timeout_ms / 1000),
            ctx.pool.connection() as conn,
        ):
            holders = await find_key_holders(conn, late[0].project_id, late[0].environment, keys)
    except (DatabaseError, PoolTimeout, TimeoutError) as exc:
        log.warning("idempotency lookup in PostgreSQL failed; queueing unchecked: %s", exc)
        LOOKUPS.labels("unavailable").inc(len(late))
        return {}
    answers = {
        e.event_id: AlreadyHeld(holder.payload_hash or "", None, holder.event_id)
        for e in late
        if e.idempotency_key is not None and (holder := holders.get(e.idempotency_key))
    }
    LOOKUPS.labels("held").inc(len(answers))
    LOOKUPS.labels("free").inc(len(late) - len(answers))
    return answers
