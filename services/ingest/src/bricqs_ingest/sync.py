"""POST /ingest/events/sync: store the event, its fact and their mechanics effects in
PostgreSQL before answering. PostgreSQL is the authority on idempotency keys here; Redis
is asked first (a key the async path took may not be processed yet) and told after."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency
from psycopg import OperationalError
from psycopg.errors import QueryCanceled
from psycopg_pool import PoolTimeout
from redis.exceptions import RedisError

from bricqs.facts import custom_fact_type
from bricqs.ids import fact_id_for_event
from bricqs.pipeline import process_envelopes
from bricqs.storage.events import Outcome, find_stored_event
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import KeyOwner
from bricqs.web.auth import authenticate
from bricqs.web.problems import ProblemError, database_overloaded
from bricqs_ingest.accept import (
    envelope_of,
    idempotency_conflict,
    parse_single,
    redis_idempotency_key,
)
from bricqs_ingest.bodies import (
    MAX_SINGLE_BODY,
    decode_body,
    header_idempotency_key,
    json_response,
    payload_hash,
)
from bricqs_ingest.context import IngestContext
from bricqs_ingest.metrics import EVENTS
from bricqs_ingest.ratelimit import give_back, limit_for, take

log = logging.getLogger("bricqs.ingest")


@post("/ingest/events/sync", request_max_body_size=MAX_SINGLE_BODY, status_code=200)
async def ingest_sync(
    request: Request[Any, Any, Any], ctx: NamedDependency[IngestContext]
) -> Response[bytes]:
    """Store the event and its fact (and, later, mechanics effects) before answering."""
    owner = await authenticate(request, ctx.keys, ctx.settings.retry_after_seconds, ctx.tokens)
    header_key = header_idempotency_key(request)
    obj, body_size = await decode_body(request, MAX_SINGLE_BODY)
    now = datetime.now(UTC)
    event = parse_single(
        obj,
        body_size,
        header_key,
        now,
        "sync",
        ctx.settings.oldest_timestamp(now, historical=False),
    )
    limit = limit_for(ctx.settings, owner)
    if limit:
        await take(ctx, limit, 1, "sync")
    digest = payload_hash(obj) if event.idempotency_key else None
    envelope = envelope_of(event, owner, now, digest)
    fact_type = custom_fact_type(event.event_name)

    redis_key = redis_idempotency_key(ctx.settings, envelope)
    if redis_key is not None:
        held = await _redis_held_key(ctx, redis_key)
        if held is not None:  # taken by the async path (perhaps not processed yet)
            return await _sync_duplicate(ctx, owner, held[0], held[1], digest, fact_type)

    try:
        async with (
            _database(ctx),
            ctx.pool.connection(timeout=ctx.settings.database_timeout_ms / 1000) as conn,
            conn.transaction(),
        ):
            processed = await process_envelopes(
                conn,
                [envelope],
                idempotency_ttl=timedelta(days=ctx.settings.idempotency_retention_days),
                rules_for=ctx.rules,
                standings=Standings(ctx.redis),
            )
    except ProblemError:
        if limit:
            await give_back(ctx, limit, 1)
        raise
    stored = processed.stored

    if stored.outcomes[envelope.event_id] is Outcome.DUPLICATE:
        holder = stored.holders[envelope.event_id]
        return await _sync_duplicate(
            ctx, owner, holder.payload_hash, holder.event_id, digest, fact_type
        )
    processed_at = stored.stored_at[envelope.event_id]
    effects = processed.effects.get(envelope.event_id)
    if redis_key is not None:
        await _remember_key(ctx, redis_key, digest or "", envelope.event_id)
    EVENTS.labels("sync", "accepted").inc()
    return json_response(
        {
            "event_id": envelope.event_id,
            "fact_id": fact_id_for_event(envelope.event_id),
            "fact_type": fact_type,
            "processed_at": _iso(processed_at),
            "duplicate": False,
            "effects": effects.as_dict() if effects else {},
        },
        200,
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@asynccontextmanager
async def _database(ctx: IngestContext) -> AsyncIterator[None]:
    """PostgreSQL failures as problems: a statement timeout is an overloaded database,
    anything else (down, no connection in time) an unavailable one."""
    try:
        yield
    except QueryCanceled as exc:
        log.warning("sync ingest: statement timeout: %s", exc)
        raise database_overloaded() from exc
    except (OperationalError, PoolTimeout) as exc:
        log.warning("sync ingest: database unavailable: %s", exc)
        raise ctx.unavailable("database_unavailable", "The database is unavailable.") from exc


async def _redis_held_key(ctx: IngestContext, redis_key: str) -> tuple[str, str] | None:
    """(payload hash, event id) holding the key in Redis; None if free or Redis is down.

    PostgreSQL stays the authority for the sync path, so Redis being down is no error.
    """
    try:
        async with asyncio.timeout(ctx.settings.redis_timeout_ms / 1000):
            value = await ctx.redis.get(redis_key)
    except (RedisError, OSError, TimeoutError):
        return None
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    held_hash, _, event_id = text.split("|", 2)
    return held_hash, event_id


async def _remember_key(ctx: IngestContext, redis_key: str, digest: str, event_id: str) -> None:
    """Let the async path see a key the sync path used (best effort).

    The message id is left empty (the event never went through a stream); the async
    path answers it as `message_id: null`.
    """
    try:
        async with asyncio.timeout(ctx.settings.redis_timeout_ms / 1000):
            await ctx.redis.set(
                redis_key,
                f"{digest}||{event_id}",
                nx=True,
                ex=ctx.settings.idempotency_ttl_seconds,
            )
    except (RedisError, OSError, TimeoutError):
        log.warning("could not remember idempotency key in Redis; PostgreSQL still enforces it")


async def _sync_duplicate(
    ctx: IngestContext,
    owner: KeyOwner,
    held_hash: str | None,
    event_id: str,
    digest: str | None,
    fact_type: str,
) -> Response[bytes]:
    if held_hash != digest:
        EVENTS.labels("sync", "rejected").inc()
        raise idempotency_conflict()
    EVENTS.labels("sync", "duplicate").inc()
    async with (
        _database(ctx),
        ctx.pool.connection(timeout=ctx.settings.database_timeout_ms / 1000) as conn,
    ):
        stored_at = await find_stored_event(conn, owner.project_id, owner.environment, event_id)
    return json_response(
        {
            "event_id": event_id,
            "fact_id": fact_id_for_event(event_id),
            "fact_type": fact_type,
            # None while the original, sent to the async endpoint, is still queued.
            "processed_at": _iso(stored_at) if stored_at else None,
            "duplicate": True,
            "effects": {},
        },
        200,
        {"Idempotent-Replayed": "true"},
    )
