"""The ingest service: `create_app(settings)` builds the Litestar app.

Routes (base path /api/v1): POST /ingest/events (async), /ingest/events/batch (async,
1-100 events), /ingest/events/sync (processed in-process before answering).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, post
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)
from prometheus_client import Counter
from psycopg import OperationalError
from psycopg.errors import QueryCanceled
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from bricqs.auth import ConflictingKeys, KeyCache, presented_key
from bricqs.facts import custom_fact_type
from bricqs.ids import fact_id_for_event, new_event_id
from bricqs.mechanics.cache import RuleCache
from bricqs.pipeline import process_envelopes
from bricqs.runtime import tune_garbage_collector
from bricqs.schemas import Envelope, Event, encode_envelope, json_decoder
from bricqs.settings import load_or_exit
from bricqs.storage.events import Outcome, find_stored_event
from bricqs.storage.tenants import KeyOwner, find_key_owner
from bricqs.stream import (
    idempotency_redis_key,
    rate_bucket_key,
    shard_for,
    stream_key,
)
from bricqs.validation import (
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    FieldError,
    check_header_idempotency_key,
    field_value,
    parse_event,
)
from bricqs.web.auth import authenticate
from bricqs.web.health import health_router
from bricqs.web.metrics import mark_worker_dead, metrics_endpoint, request_metrics
from bricqs.web.problems import ProblemError, database_overloaded, exception_handlers
from bricqs_ingest.backlog import BacklogMonitor
from bricqs_ingest.openapi import openapi_document
from bricqs_ingest.publisher import (
    AlreadyHeld,
    Command,
    EnqueueCommand,
    Enqueued,
    EnqueueResult,
    QueueUnavailable,
    RateLimit,
    RateLimited,
    StreamPublisher,
    Taken,
    TakeTokens,
)
from bricqs_ingest.resends import held_in_postgres
from bricqs_ingest.settings import IngestSettings

log = logging.getLogger("bricqs.ingest")

EVENTS = Counter(
    "bricqs_ingest_events_total",
    "Events by endpoint and outcome (accepted, rejected, duplicate).",
    ["endpoint", "outcome"],
)
# Every series at 0 from the start: rates and alerts see the first event, and a dashboard
# shows 0 rather than "no data" for an outcome that has not happened yet.
for _endpoint, _outcomes in (
    ("single", ("accepted", "rejected", "duplicate", "rate_limited")),
    ("batch", ("accepted", "rejected", "duplicate", "rate_limited")),
    ("sync", ("accepted", "rejected", "duplicate", "rate_limited")),
):
    for _outcome in _outcomes:
        EVENTS.labels(_endpoint, _outcome)

# A single event's body may be pretty-printed; its re-encoded form must fit 32 KiB.
MAX_SINGLE_BODY = 2 * MAX_EVENT_BYTES
MAX_BATCH_BODY = 1024 * 1024
_canonical = msgspec.json.Encoder(order="sorted")
_json = msgspec.json.Encoder()


@dataclass
class IngestContext:
    """The clients one worker process shares between requests, made in the lifespan."""

    settings: IngestSettings
    redis: Redis
    pool: AsyncConnectionPool
    publisher: StreamPublisher
    keys: KeyCache
    rules: RuleCache
    backlog: BacklogMonitor


# ---------------------------------------------------------------------------------------
# Request helpers


def _json_response(
    body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> Response[bytes]:
    return Response(
        _json.encode(body), status_code=status, media_type="application/json", headers=headers or {}
    )


def _accepted(message_id: str | None, event_id: str, *, duplicate: bool) -> dict[str, Any]:
    """The 202 body of POST /ingest/events (the route's and the fast path's)."""
    return {
        "accepted": True,
        "duplicate": duplicate,
        "message_id": message_id,
        "event_id": event_id,
    }


def _unavailable(ctx: IngestContext, code: str, detail: str) -> ProblemError:
    return ProblemError(
        503, code, detail, headers={"Retry-After": str(ctx.settings.retry_after_seconds)}
    )


async def _held_in_postgres(
    ctx: IngestContext, envelopes: Sequence[Envelope]
) -> dict[str, AlreadyHeld]:
    return await held_in_postgres(
        ctx.pool,
        envelopes,
        redis_memory=timedelta(seconds=ctx.settings.idempotency_ttl_seconds),
        bound=ctx.settings.idempotency_lookup_timeout_ms / 1000,
    )


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
        raise _unavailable(ctx, "database_unavailable", "The database is unavailable.") from exc


async def _authenticate(request: Request[Any, Any, Any], ctx: IngestContext) -> KeyOwner:
    return await authenticate(request, ctx.keys, ctx.settings.retry_after_seconds)


async def _decode_body(request: Request[Any, Any, Any], limit: int) -> tuple[Any, int]:
    """The decoded JSON body and its size once inflated: size limits apply to the event
    as sent, not to its compressed form."""
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        body = _gunzip(body, limit)
    elif encoding != "identity":
        raise ProblemError(
            415,
            "unsupported_content_encoding",
            "Send the body plain or with Content-Encoding: gzip.",
        )
    if not body:
        raise ProblemError(400, "empty_body", "The request body is empty; send a JSON object.")
    try:
        return json_decoder.decode(body), len(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ProblemError(400, "malformed_json", f"The body is not valid JSON: {exc}") from exc


def _gunzip(body: bytes, limit: int) -> bytes:
    """Inflate a gzip body, stopping at `limit` bytes: a zip bomb costs at most that."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProblemError(400, "malformed_gzip", f"The gzip body is corrupt: {exc}") from exc
    if len(data) > limit:
        raise ProblemError(
            413, "payload_too_large", f"The decompressed body exceeds {limit} bytes."
        )
    if not inflater.eof:
        raise ProblemError(400, "malformed_gzip", "The gzip body is truncated.")
    return data


def _header_idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    value = request.headers.get("idempotency-key")
    error = check_header_idempotency_key(value)
    if error is not None:
        raise ProblemError(422, "validation_failed", "The request is invalid.", errors=[error])
    return value


def _payload_hash(obj: dict[str, Any]) -> str:
    """Digest of what the client sent, to tell a retry from another use of the same key."""
    material = [
        field_value(obj, "event_name"),
        obj.get("participant_id"),
        field_value(obj, "properties") or {},
        field_value(obj, "timestamp"),
    ]
    return hashlib.blake2b(_canonical.encode(material), digest_size=16).hexdigest()


def _envelope(
    event: Event, owner: KeyOwner, received_at: datetime, payload_hash: str | None
) -> Envelope:
    return Envelope(
        event_id=new_event_id(),
        project_id=owner.project_id,
        environment=owner.environment,
        event_name=event.event_name,
        participant_id=event.participant_id,
        properties=event.properties,
        occurred_at=event.timestamp or received_at,
        received_at=received_at,
        idempotency_key=event.idempotency_key,
        payload_hash=payload_hash,
    )


def _limit(ctx: IngestContext, owner: KeyOwner) -> RateLimit | None:
    """The token bucket of this key, or None when the key has no limit.

    One bucket per key, apart from the streams: the limit is the key's whatever the
    number of shards, and tokens are taken before anything is enqueued, so a batch is
    admitted whole or refused whole.
    """
    per_second = owner.rate_limit_per_second
    if per_second is None:
        per_second = ctx.settings.rate_limit_per_second
    if per_second <= 0:
        return None
    burst = owner.rate_limit_burst or ctx.settings.rate_limit_burst
    return RateLimit(rate_bucket_key(owner.key_id), per_second, burst)


async def _take(ctx: IngestContext, limit: RateLimit, cost: int, endpoint: str) -> Taken:
    """Take `cost` tokens, or refuse the request (429) and count its events."""
    (taken,) = await _enqueue(ctx, [TakeTokens(limit, cost)])
    if isinstance(taken, RateLimited):
        EVENTS.labels(endpoint, "rate_limited").inc(cost)
        raise _rate_limited(limit, taken)
    assert isinstance(taken, Taken)
    return taken


async def _give_back(ctx: IngestContext, limit: RateLimit, cost: int) -> None:
    """Return tokens taken for events that were not queued (best effort: a Redis that
    failed the enqueue may fail this too, and then the tokens refill with time)."""
    try:
        await ctx.publisher.enqueue([TakeTokens(limit, -cost)])
    except QueueUnavailable as exc:
        log.warning("could not give back %d rate-limit tokens: %s", cost, exc)


def _rate_limited(limit: RateLimit, result: RateLimited) -> ProblemError:
    wait = max(1, math.ceil(result.retry_after_ms / 1000))
    return ProblemError(
        429,
        "rate_limited",
        f"Too many events for this API key; retry in {wait} s.",
        headers={"Retry-After": str(wait), **_rate_headers(limit, result.remaining, wait)},
    )


def _rate_headers(limit: RateLimit | None, remaining: int, reset: int = 0) -> dict[str, str]:
    """RateLimit-* headers (IETF draft): bucket size, tokens left, seconds to wait."""
    if limit is None or remaining < 0:
        return {}
    return {
        "RateLimit-Limit": str(limit.burst),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset),
    }


def _command(ctx: IngestContext, envelope: Envelope) -> EnqueueCommand:
    """The enqueue command of an envelope, on its participant's shard."""
    shard = shard_for(envelope.project_id, envelope.participant_id, ctx.settings.stream_shards)
    redis_key = None
    if envelope.idempotency_key is not None:
        redis_key = idempotency_redis_key(
            shard, envelope.project_id, envelope.environment, envelope.idempotency_key
        )
    return EnqueueCommand(
        stream=stream_key(shard),
        envelope=encode_envelope(envelope),
        event_id=envelope.event_id,
        idempotency_key=redis_key,
        payload_hash=envelope.payload_hash or "",
    )


def _conflict() -> ProblemError:
    return ProblemError(
        409,
        "idempotency_conflict",
        "This idempotency key was already used with a different payload.",
    )


async def _enqueue(ctx: IngestContext, commands: Sequence[Command]) -> list[EnqueueResult]:
    try:
        return await ctx.publisher.enqueue(commands)
    except QueueUnavailable as exc:
        log.warning("enqueue failed: %s", exc)
        raise _unavailable(ctx, "queue_unavailable", "The event queue is unavailable.") from exc


def _check_backlog(ctx: IngestContext) -> None:
    if ctx.backlog.over:
        raise ProblemError(
            503,
            "ingest_backpressure",
            "Events are arriving faster than they are processed; retry shortly.",
            headers={"Retry-After": str(ctx.settings.retry_after_seconds)},
        )


def _parse_one(obj: Any, body_size: int, header_key: str | None, now: datetime) -> Event:
    event = parse_event(
        obj, now=now, check_size=body_size > MAX_EVENT_BYTES, idempotency_key=header_key
    )
    if isinstance(event, list):
        raise ProblemError(422, "validation_failed", "The event is invalid.", errors=event)
    return event


# ---------------------------------------------------------------------------------------
# Routes


@post("/ingest/events", request_max_body_size=MAX_SINGLE_BODY)
async def ingest_event(
    request: Request[Any, Any, Any], ctx: NamedDependency[IngestContext]
) -> Response[bytes]:
    """Queue one event for processing; answers 202 once it is durably on the stream."""
    owner = await _authenticate(request, ctx)
    _check_backlog(ctx)
    header_key = _header_idempotency_key(request)
    obj, body_size = await _decode_body(request, MAX_SINGLE_BODY)
    now = datetime.now(UTC)
    try:
        event = _parse_one(obj, body_size, header_key, now)
    except ProblemError:
        EVENTS.labels("single", "rejected").inc()
        raise
    payload_hash = _payload_hash(obj) if event.idempotency_key else None
    envelope = _envelope(event, owner, now, payload_hash)
    limit = _limit(ctx, owner)
    remaining = -1
    result: EnqueueResult | None = (await _held_in_postgres(ctx, [envelope])).get(envelope.event_id)
    if result is None:
        remaining = (await _take(ctx, limit, 1, "single")).remaining if limit else -1
        try:
            (result,) = await _enqueue(ctx, [_command(ctx, envelope)])
        except ProblemError:
            if limit:
                await _give_back(ctx, limit, 1)
            raise
        if isinstance(result, AlreadyHeld) and limit:  # a repeat queues nothing: no cost
            await _give_back(ctx, limit, 1)
    if isinstance(result, AlreadyHeld):
        if result.payload_hash != payload_hash:
            EVENTS.labels("single", "rejected").inc()
            raise _conflict()
        EVENTS.labels("single", "duplicate").inc()
        return _json_response(
            _accepted(result.message_id, result.event_id, duplicate=True),
            202,
            {"Idempotent-Replayed": "true"},
        )
    assert isinstance(result, Enqueued)
    EVENTS.labels("single", "accepted").inc()
    return _json_response(
        _accepted(result.message_id, envelope.event_id, duplicate=False),
        202,
        _rate_headers(limit, remaining),
    )


@post("/ingest/events/batch", request_max_body_size=MAX_BATCH_BODY)
async def ingest_batch(
    request: Request[Any, Any, Any], ctx: NamedDependency[IngestContext]
) -> Response[bytes]:
    """Queue 1-100 events, each validated on its own; one Redis round trip for all."""
    owner = await _authenticate(request, ctx)
    _check_backlog(ctx)
    header_key = _header_idempotency_key(request)
    obj, _ = await _decode_body(request, MAX_BATCH_BODY)
    events = obj.get("events") if isinstance(obj, dict) else None
    if not isinstance(events, list):
        raise ProblemError(
            400,
            "invalid_batch",
            "The body must be an object with an 'events' array.",
            errors=[FieldError("events", "must be an array", "invalid_type")],
        )
    if not 1 <= len(events) <= MAX_BATCH_EVENTS:
        code = "batch_too_large" if events else "empty_batch"
        raise ProblemError(
            400,
            code,
            f"A batch holds 1 to {MAX_BATCH_EVENTS} events; this one has {len(events)}.",
            errors=[FieldError("events", f"must hold 1 to {MAX_BATCH_EVENTS} events", code)],
        )

    now = datetime.now(UTC)
    results: list[dict[str, Any]] = [{} for _ in events]
    pending: list[tuple[int, Envelope]] = []
    for index, item in enumerate(events):
        event = parse_event(item, now=now, prefix=f"events[{index}]", check_size=True)
        if isinstance(event, list):
            results[index] = _rejected(index, "validation_failed", "The event is invalid.", event)
            continue
        if event.idempotency_key is None and header_key is not None:
            # A batch retried under one Idempotency-Key dedupes event by event.
            event = msgspec.structs.replace(event, idempotency_key=f"{header_key}:{index}")
        payload_hash = _payload_hash(item) if event.idempotency_key else None
        pending.append((index, _envelope(event, owner, now, payload_hash)))

    answers: dict[str, EnqueueResult] = {}
    answers.update(await _held_in_postgres(ctx, [env for _, env in pending]))
    to_queue = [env for _, env in pending if env.event_id not in answers]
    limit = _limit(ctx, owner) if to_queue else None
    if limit:
        await _take(ctx, limit, len(to_queue), "batch")
    try:
        replies = await _enqueue(ctx, [_command(ctx, env) for env in to_queue]) if to_queue else []
    except ProblemError:
        if limit:
            await _give_back(ctx, limit, len(to_queue))
        raise
    answers.update((env.event_id, reply) for env, reply in zip(to_queue, replies, strict=True))
    message_ids: list[str] = []
    for index, envelope in pending:
        reply = answers[envelope.event_id]
        if isinstance(reply, Enqueued):
            message_ids.append(reply.message_id)
            results[index] = {
                "index": index,
                "status": "accepted",
                "message_id": reply.message_id,
                "event_id": envelope.event_id,
            }
        elif isinstance(reply, AlreadyHeld) and reply.payload_hash != envelope.payload_hash:
            results[index] = _rejected(
                index,
                "idempotency_conflict",
                "This idempotency key was already used with a different payload.",
            )
        elif isinstance(reply, AlreadyHeld):
            results[index] = {
                "index": index,
                "status": "duplicate",
                "message_id": reply.message_id,
                "event_id": reply.event_id,
            }
    counts = {
        s: sum(1 for r in results if r["status"] == s)
        for s in ("accepted", "duplicate", "rejected")
    }
    for status, count in counts.items():
        if count:
            EVENTS.labels("batch", status).inc(count)
    body = {
        "accepted": counts["accepted"],
        "rejected": counts["rejected"],
        "duplicates": counts["duplicate"],
        "message_ids": message_ids,
        "results": results,
    }
    return _json_response(body, 422 if counts["rejected"] == len(events) else 202)


def _rejected(
    index: int, code: str, detail: str, errors: list[FieldError] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "detail": detail}
    if errors:
        error["errors"] = [msgspec.structs.asdict(e) for e in errors]
    return {"index": index, "status": "rejected", "error": error}


@post("/ingest/events/sync", request_max_body_size=MAX_SINGLE_BODY, status_code=200)
async def ingest_sync(
    request: Request[Any, Any, Any], ctx: NamedDependency[IngestContext]
) -> Response[bytes]:
    """Store the event and its fact (and, later, mechanics effects) before answering."""
    owner = await _authenticate(request, ctx)
    header_key = _header_idempotency_key(request)
    obj, body_size = await _decode_body(request, MAX_SINGLE_BODY)
    now = datetime.now(UTC)
    try:
        event = _parse_one(obj, body_size, header_key, now)
    except ProblemError:
        EVENTS.labels("sync", "rejected").inc()
        raise
    limit = _limit(ctx, owner)
    if limit:
        await _take(ctx, limit, 1, "sync")
    payload_hash = _payload_hash(obj) if event.idempotency_key else None
    envelope = _envelope(event, owner, now, payload_hash)
    fact_type = custom_fact_type(event.event_name)

    redis_key = None
    if envelope.idempotency_key is not None:
        shard = shard_for(owner.project_id, event.participant_id, ctx.settings.stream_shards)
        redis_key = idempotency_redis_key(
            shard, owner.project_id, owner.environment, envelope.idempotency_key
        )
        held = await _redis_held_key(ctx, redis_key)
        if held is not None:  # taken by the async path (perhaps not processed yet)
            return await _sync_duplicate(ctx, owner, held[0], held[1], payload_hash, fact_type)

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
            )
    except ProblemError:
        if limit:
            await _give_back(ctx, limit, 1)
        raise
    stored = processed.stored

    if stored.outcomes[envelope.event_id] is Outcome.DUPLICATE:
        holder = stored.holders[envelope.event_id]
        return await _sync_duplicate(
            ctx, owner, holder.payload_hash, holder.event_id, payload_hash, fact_type
        )
    processed_at = stored.stored_at[envelope.event_id]
    effects = processed.effects.get(envelope.event_id)
    if redis_key is not None:
        await _remember_key(ctx, redis_key, payload_hash or "", envelope.event_id)
    EVENTS.labels("sync", "accepted").inc()
    return _json_response(
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
    payload_hash, _, event_id = text.split("|", 2)
    return payload_hash, event_id


async def _remember_key(
    ctx: IngestContext, redis_key: str, payload_hash: str, event_id: str
) -> None:
    """Let the async path see a key the sync path used (best effort).

    The message id is left empty (the event never went through a stream); the async
    path answers it as `message_id: null`.
    """
    try:
        async with asyncio.timeout(ctx.settings.redis_timeout_ms / 1000):
            await ctx.redis.set(
                redis_key,
                f"{payload_hash}||{event_id}",
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
    payload_hash: str | None,
    fact_type: str,
) -> Response[bytes]:
    if held_hash != payload_hash:
        EVENTS.labels("sync", "rejected").inc()
        raise _conflict()
    EVENTS.labels("sync", "duplicate").inc()
    async with (
        _database(ctx),
        ctx.pool.connection(timeout=ctx.settings.database_timeout_ms / 1000) as conn,
    ):
        stored_at = await find_stored_event(conn, owner.project_id, owner.environment, event_id)
    return _json_response(
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


# ---------------------------------------------------------------------------------------
# Fast path of the hottest request

SINGLE_PATH = "/api/v1/ingest/events"


def single_event_fast_path(context: Callable[[], IngestContext]) -> Any:
    """ASGI middleware answering the plain case of POST /ingest/events without the
    framework's request and response machinery; everything else goes to the route.

    The plain case: a key whose owner is cached, no rate limit, no backpressure, no
    Idempotency-Key header, an identity-encoded body within the limit that is a valid
    event without an idempotency key. For anything else -- every error included -- the
    request, its body replayed, goes to `ingest_event`, which alone decides what to
    answer. The answer of the plain case is the one `ingest_event` gives; a queue failure
    is raised as the same ProblemError, rendered by the same exception handler; the
    request-latency middleware, outside this one, observes both paths alike.
    """

    def middleware(app: ASGIApp) -> ASGIApp:
        async def fast(scope: Scope, receive: Receive, send: Send) -> None:
            if (
                scope["type"] != ScopeType.HTTP
                or scope["path"] != SINGLE_PATH
                or scope["method"] != "POST"
            ):
                await app(scope, receive, send)
                return
            messages: list[ReceiveMessage] = []
            body = b""
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break
                body += message.get("body", b"")
                if len(body) > MAX_SINGLE_BODY or not message.get("more_body", False):
                    break
            complete = messages[-1]["type"] == "http.request" and not messages[-1].get(
                "more_body", False
            )
            answer = await _plain_single(context(), scope, body) if complete else None
            if answer is None:
                await app(scope, _replay(messages, receive), send)
                return
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": 202,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                ],
            }
            await send(start)
            done: HTTPResponseBodyEvent = {
                "type": "http.response.body",
                "body": answer,
                "more_body": False,
            }
            await send(done)

        return fast

    return middleware


def _replay(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """`receive` that gives the messages already read again, then the rest."""
    pending = list(messages)

    async def replay() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _plain_single(ctx: IngestContext, scope: Scope, body: bytes) -> bytes | None:
    """The 202 body for a plain single event, after enqueueing it; None when the request
    is not the plain case (nothing was done)."""
    api_key: str | None = None
    authorization: str | None = None
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            if api_key is not None:  # sent twice: the route decides
                return None
            api_key = value.decode("latin-1")
        elif name == b"authorization":
            if authorization is not None:
                return None
            authorization = value.decode("latin-1")
        elif name == b"idempotency-key" or (
            name == b"content-encoding" and value.strip().lower() != b"identity"
        ):
            return None
    try:
        key = presented_key(api_key, authorization)
    except ConflictingKeys:
        return None
    if not key or not body or len(body) > MAX_SINGLE_BODY or ctx.backlog.over:
        return None
    owner = ctx.keys.cached_owner(key)
    if owner is None or _limit(ctx, owner) is not None:
        return None
    try:
        obj = json_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    now = datetime.now(UTC)
    event = parse_event(obj, now=now, check_size=len(body) > MAX_EVENT_BYTES)
    if isinstance(event, list) or event.idempotency_key is not None:
        return None
    envelope = _envelope(event, owner, now, None)
    (result,) = await _enqueue(ctx, [_command(ctx, envelope)])
    assert isinstance(result, Enqueued)  # no key, no limit: nothing else can come back
    EVENTS.labels("single", "accepted").inc()
    return _json.encode(_accepted(result.message_id, envelope.event_id, duplicate=False))


# ---------------------------------------------------------------------------------------
# App


def create_app(settings: IngestSettings | None = None) -> Litestar:
    """Build the ingest app; clients are made in the lifespan, one set per worker."""
    settings = settings or load_or_exit(IngestSettings)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    holder: dict[str, IngestContext] = {}

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        timeout = settings.redis_timeout_ms / 1000
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # No automatic retries: a resent XADD could enqueue an event twice. Clients
            # retry, with idempotency keys, when we answer 503.
            retry=Retry(NoBackoff(), 0),
        )
        pool = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=settings.database_pool_size,
            kwargs={"options": f"-c statement_timeout={settings.database_timeout_ms}"},
            open=False,
        )
        await pool.open(wait=False)

        async def lookup(key_hash: bytes) -> KeyOwner | None:
            async with pool.connection(timeout=settings.database_timeout_ms / 1000) as conn:
                return await find_key_owner(conn, key_hash)

        publisher = StreamPublisher(
            redis,
            timeout=timeout,
            idempotency_ttl=settings.idempotency_ttl_seconds,
            max_inflight=settings.max_inflight_pipelines,
        )
        holder["ctx"] = IngestContext(
            settings,
            redis,
            pool,
            publisher,
            KeyCache(
                lookup,
                ttl=settings.auth_cache_ttl_seconds,
                negative_ttl=settings.auth_negative_ttl_seconds,
            ),
            RuleCache(settings.rules_refresh_seconds),
            BacklogMonitor(
                redis,
                shards=settings.stream_shards,
                limit=settings.max_backlog,
                interval=settings.backlog_check_ms / 1000,
            ),
        )
        holder["ctx"].backlog.start()
        tune_garbage_collector()
        try:
            yield
        finally:
            await holder["ctx"].backlog.stop()
            await publisher.close()
            await redis.aclose()
            await pool.close()
            mark_worker_dead()

    def context() -> IngestContext:
        return holder["ctx"]

    def checks() -> dict[str, Any]:
        # Only Redis: the async endpoints need nothing else (keys are cached), so a
        # PostgreSQL outage must not take ingest pods out of their Service. The sync
        # endpoint answers 503 database_unavailable by itself meanwhile.
        return {"redis": holder["ctx"].redis.ping}

    api = Router(path="/api/v1", route_handlers=[ingest_event, ingest_batch, ingest_sync])
    return Litestar(
        route_handlers=[api, health_router(checks), metrics_endpoint, openapi_document],
        dependencies={"ctx": Provide(context, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        middleware=[request_metrics("ingest"), single_event_fast_path(context)],
        lifespan=[lifespan],
        openapi_config=None,
        debug=False,
    )
