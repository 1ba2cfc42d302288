"""Accepting one event on the async path: the one implementation that the route of
POST /ingest/events and its fast path share, so their answers cannot drift.

Also the pieces every endpoint builds an event with: parsing one event, its envelope,
its enqueue command and the 409 of a reused idempotency key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bricqs.ids import new_event_id
from bricqs.schemas import Envelope, Event, encode_envelope
from bricqs.storage.tenants import KeyOwner
from bricqs.stream import event_stream_key, idempotency_redis_key, shard_for
from bricqs.validation import MAX_EVENT_BYTES, parse_event
from bricqs.web.auth import check_participant
from bricqs.web.problems import ProblemError
from bricqs_ingest.bodies import json_encoder
from bricqs_ingest.context import IngestContext
from bricqs_ingest.metrics import EVENTS
from bricqs_ingest.publisher import (
    AlreadyHeld,
    EnqueueCommand,
    Enqueued,
    EnqueueResult,
    RateLimit,
)
from bricqs_ingest.ratelimit import give_back, rate_headers, take
from bricqs_ingest.resends import held_in_postgres
from bricqs_ingest.settings import IngestSettings

# The single endpoint's series, resolved once (`labels()` takes a lock per call).
_COUNTED = {o: EVENTS.labels("single", o) for o in ("accepted", "duplicate", "rejected")}


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON answer as status, encoded body and extra headers (for ASGI or Litestar)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def parse_single(
    obj: Any,
    body_size: int,
    header_key: str | None,
    now: datetime,
    endpoint: str,
    oldest: datetime | None,
) -> Event:
    """The event of a single-event body, or 422 (counted as rejected). `oldest`: the
    earliest timestamp accepted (`IngestSettings.oldest_timestamp`)."""
    event = parse_event(
        obj,
        now=now,
        check_size=body_size > MAX_EVENT_BYTES,
        idempotency_key=header_key,
        oldest=oldest,
    )
    if isinstance(event, list):
        EVENTS.labels(endpoint, "rejected").inc()
        raise ProblemError(422, "validation_failed", "The event is invalid.", errors=event)
    return event


def envelope_of(
    event: Event,
    owner: KeyOwner,
    received_at: datetime,
    payload_hash: str | None,
    *,
    historical: bool = False,
) -> Envelope:
    """The stream entry of an accepted event (of a historical import, with `historical`);
    403 when a participant token sends another participant's event."""
    check_participant(owner, event.participant_id)
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
        historical=historical,
    )


def redis_idempotency_key(
    settings: IngestSettings, envelope: Envelope, shard: int | None = None
) -> str | None:
    """Where Redis keeps the envelope's idempotency key (its participant's shard, when the
    caller has not worked it out already)."""
    if envelope.idempotency_key is None:
        return None
    if shard is None:
        shard = shard_for(envelope.project_id, envelope.participant_id, settings.stream_shards)
    return idempotency_redis_key(
        shard, envelope.project_id, envelope.environment, envelope.idempotency_key
    )


def enqueue_command(settings: IngestSettings, envelope: Envelope) -> EnqueueCommand:
    """The enqueue command of an envelope, on its participant's shard (its historical
    stream for an import)."""
    shard = shard_for(envelope.project_id, envelope.participant_id, settings.stream_shards)
    return EnqueueCommand(
        stream=event_stream_key(shard, historical=envelope.historical),
        envelope=encode_envelope(envelope),
        event_id=envelope.event_id,
        idempotency_key=redis_idempotency_key(settings, envelope, shard),
        payload_hash=envelope.payload_hash or "",
    )


def idempotency_conflict() -> ProblemError:
    """409: the key was used before with another payload."""
    return ProblemError(
        409,
        "idempotency_conflict",
        "This idempotency key was already used with a different payload.",
    )


def accepted_body(message_id: str | None, event_id: str, *, duplicate: bool) -> bytes:
    """The 202 body of POST /ingest/events."""
    return json_encoder.encode(
        {"accepted": True, "duplicate": duplicate, "message_id": message_id, "event_id": event_id}
    )


async def accept_event(ctx: IngestContext, envelope: Envelope, limit: RateLimit | None) -> Answer:
    """Queue one event (or recognise its key) and answer 202; 409, 429 and 503 are raised
    as problems. `limit` is the key's (`ratelimit.limit_for`). Counted under the `single`
    endpoint."""
    remaining = -1
    result: EnqueueResult | None = None
    if envelope.idempotency_key is not None:  # the plain case skips even the call
        result = (await held_in_postgres(ctx, [envelope])).get(envelope.event_id)
    if result is None:
        remaining = (await take(ctx, limit, 1, "single")).remaining if limit else -1
        try:
            (result,) = await ctx.enqueue([enqueue_command(ctx.settings, envelope)])
        except ProblemError:
            if limit:
                await give_back(ctx, limit, 1)
            raise
        if isinstance(result, AlreadyHeld) and limit:  # a repeat queues nothing: no cost
            await give_back(ctx, limit, 1)
    if isinstance(result, AlreadyHeld):
        if result.payload_hash != envelope.payload_hash:
            _COUNTED["rejected"].inc()
            raise idempotency_conflict()
        _COUNTED["duplicate"].inc()
        body = accepted_body(result.message_id, result.event_id, duplicate=True)
        return Answer(202, body, {"Idempotent-Replayed": "true"})
    assert isinstance(result, Enqueued)
    _COUNTED["accepted"].inc()
    body = accepted_body(result.message_id, envelope.event_id, duplicate=False)
    return Answer(202, body, rate_headers(limit, remaining))
