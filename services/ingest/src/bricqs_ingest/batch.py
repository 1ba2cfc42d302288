"""POST /ingest/events/batch: 1-100 events, each validated on its own, queued in one
Redis round trip, answered with a result per event in input order.

A batch with `"historical": true` is a historical import (docs/import.md): its events may
be older than live ones, go to the historical streams, which the processor reads with
what live traffic leaves, and their outcomes are recorded without webhooks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency

from bricqs.schemas import Envelope
from bricqs.storage.tenants import KeyOwner
from bricqs.validation import MAX_BATCH_EVENTS, FieldError, parse_event
from bricqs.web.auth import authenticate, insufficient_scope
from bricqs.web.problems import ProblemError
from bricqs_ingest.accept import enqueue_command, envelope_of, idempotency_conflict
from bricqs_ingest.bodies import (
    MAX_BATCH_BODY,
    decode_body,
    header_idempotency_key,
    json_response,
    payload_hash,
)
from bricqs_ingest.context import IMPORT_SCOPE, IMPORT_SECURITY, INGEST_SCOPE, IngestContext
from bricqs_ingest.metrics import EVENTS
from bricqs_ingest.publisher import AlreadyHeld, Enqueued, EnqueueResult
from bricqs_ingest.ratelimit import give_back, import_pace_for, limit_for, take, wait_for_turn
from bricqs_ingest.resends import held_in_postgres


@post("/ingest/events/batch", request_max_body_size=MAX_BATCH_BODY, security=IMPORT_SECURITY)
async def ingest_batch(
    request: Request[Any, Any, Any], ctx: NamedDependency[IngestContext]
) -> Response[bytes]:
    """Queue 1-100 events, each validated on its own; one Redis round trip for all."""
    owner = await authenticate(request, ctx.keys, ctx.settings.retry_after_seconds, ctx.tokens)
    ctx.check_backlog()
    header_key = header_idempotency_key(request)
    obj, _ = await decode_body(request, MAX_BATCH_BODY)
    events = _events(obj)
    historical = _historical(obj)
    _check_import(owner, historical)
    if historical:
        ctx.check_backlog(historical=True)

    now = datetime.now(UTC)
    oldest = ctx.settings.oldest_timestamp(now, historical=historical)
    results: list[dict[str, Any]] = [{} for _ in events]
    pending: list[tuple[int, Envelope]] = []
    for index, item in enumerate(events):
        event = parse_event(
            item, now=now, prefix=f"events[{index}]", check_size=True, oldest=oldest
        )
        if isinstance(event, list):
            results[index] = _rejected(index, "validation_failed", "The event is invalid.", event)
            continue
        if event.idempotency_key is None and header_key is not None:
            # A batch retried under one Idempotency-Key dedupes event by event.
            event = msgspec.structs.replace(event, idempotency_key=f"{header_key}:{index}")
        digest = payload_hash(item) if event.idempotency_key else None
        pending.append((index, envelope_of(event, owner, now, digest, historical=historical)))

    answers: dict[str, EnqueueResult] = {}
    answers.update(await held_in_postgres(ctx, [env for _, env in pending]))
    to_queue = [env for _, env in pending if env.event_id not in answers]
    pace = import_pace_for(ctx.settings, owner, MAX_BATCH_EVENTS) if historical else None
    if pace and to_queue:
        await wait_for_turn(ctx, pace, len(to_queue))
    limit = limit_for(ctx.settings, owner) if to_queue else None
    if limit:
        await take(ctx, limit, len(to_queue), "batch")
    try:
        commands = [enqueue_command(ctx.settings, env) for env in to_queue]
        replies = await ctx.enqueue(commands) if commands else []
    except ProblemError:
        if limit:
            await give_back(ctx, limit, len(to_queue))
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
            conflict = idempotency_conflict()
            results[index] = _rejected(index, conflict.code, conflict.detail)
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
    return json_response(body, 422 if counts["rejected"] == len(events) else 202)


def _events(obj: Any) -> list[Any]:
    """The `events` array of a batch body, or 400."""
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
    return events


def _historical(obj: dict[str, Any]) -> bool:
    """Whether the batch is a historical import (its `historical` field), or 400."""
    historical = obj.get("historical", False)
    if not isinstance(historical, bool):
        raise ProblemError(
            400,
            "invalid_batch",
            "The batch's 'historical' field must be true or false.",
            errors=[FieldError("historical", "must be a boolean", "invalid_type")],
        )
    return historical


def _check_import(owner: KeyOwner, historical: bool) -> None:
    """403 unless the caller may send this batch: an import takes a key with `ingest` or
    `import` (a participant token acts live only); a key with `import` and without
    `ingest` sends imports only."""
    if historical and owner.scopes.isdisjoint({INGEST_SCOPE, IMPORT_SCOPE}):
        raise insufficient_scope(frozenset({INGEST_SCOPE, IMPORT_SCOPE}))
    if not historical and owner.participant_id is None and INGEST_SCOPE not in owner.scopes:
        raise ProblemError(
            403,
            "historical_required",
            'This key may only send historical imports: add "historical": true to the batch.',
        )


def _rejected(
    index: int, code: str, detail: str, errors: list[FieldError] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "detail": detail}
    if errors:
        error["errors"] = [msgspec.structs.asdict(e) for e in errors]
    return {"index": index, "status": "rejected", "error": error}
