"""POST /ingest/events: queue one event (the route; plain requests take the fast path)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency

from bricqs.web.auth import authenticate
from bricqs_ingest.accept import accept_event, envelope_of, parse_single
from bricqs_ingest.bodies import MAX_SINGLE_BODY, decode_body, header_idempotency_key, payload_hash
from bricqs_ingest.context import IngestContext
from bricqs_ingest.ratelimit import limit_for


@post("/ingest/events", request_max_body_size=MAX_SINGLE_BODY)
async def ingest_event(
    request: Request[Any, Any, Any], ctx: NamedDependency[IngestContext]
) -> Response[bytes]:
    """Queue one event for processing; answers 202 once it is durably on the stream."""
    owner = await authenticate(request, ctx.keys, ctx.settings.retry_after_seconds, ctx.tokens)
    ctx.check_backlog()
    header_key = header_idempotency_key(request)
    obj, body_size = await decode_body(request, MAX_SINGLE_BODY)
    now = datetime.now(UTC)
    event = parse_single(
        obj,
        body_size,
        header_key,
        now,
        "single",
        ctx.settings.oldest_timestamp(now, historical=False),
    )
    digest = payload_hash(obj) if event.idempotency_key else None
    envelope = envelope_of(event, owner, now, digest)
    answer = await accept_event(ctx, envelope, limit_for(ctx.settings, owner))
    return Response(
        answer.body,
        status_code=answer.status,
        media_type="application/json",
        headers=answer.headers,
    )
