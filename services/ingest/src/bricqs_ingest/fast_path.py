"""The fast path of the hottest request: POST /ingest/events in its plain case, answered
without the framework's request and response machinery.

The plain case: a key whose owner is cached, no rate limit, no backpressure, no
Idempotency-Key, an identity-encoded body within the limit that is a valid event without
an idempotency key. Everything else -- every error included -- goes, its body replayed,
to the route, which alone decides what to answer. The plain case is answered by
`accept_event`, the function the route answers with, so the two cannot drift; a queue
failure is raised as the same ProblemError, rendered by the same exception handler. The
request-latency middleware, outside this one, observes both paths alike, and
`bricqs_ingest_fast_path_total` counts the requests this path answered.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from litestar import Litestar
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

from bricqs.auth import ConflictingKeys, presented_key
from bricqs.schemas import json_decoder
from bricqs.validation import MAX_EVENT_BYTES, parse_event
from bricqs_ingest.accept import Answer, accept_event, envelope_of
from bricqs_ingest.bodies import MAX_SINGLE_BODY
from bricqs_ingest.context import INGEST_SCOPE, IngestContext, ingest_context
from bricqs_ingest.metrics import FAST_PATH
from bricqs_ingest.ratelimit import limit_for

SINGLE_PATH = "/api/v1/ingest/events"


def single_event_fast_path(app: ASGIApp) -> ASGIApp:
    """ASGI middleware answering the plain case of POST /ingest/events itself."""

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
        ctx = ingest_context(Litestar.from_scope(scope).state)
        answer = await _plain_single(ctx, scope, body) if complete else None
        if answer is None:
            await app(scope, _replay(messages, receive), send)
            return
        FAST_PATH.inc()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(answer.body)).encode()),
        ]
        if answer.headers:  # none in the plain case today; kept so the paths cannot drift
            headers += [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": answer.status,
            "headers": headers,
        }
        await send(start)
        done: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": answer.body,
            "more_body": False,
        }
        await send(done)

    return fast


def _replay(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """`receive` that gives the messages already read again, then the rest."""
    pending = list(messages)

    async def replay() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _plain_single(ctx: IngestContext, scope: Scope, body: bytes) -> Answer | None:
    """The answer to a plain single event, after accepting it; None when the request is
    not the plain case (nothing was done)."""
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
    if (
        owner is None
        or INGEST_SCOPE not in owner.scopes  # the route answers 403
        or limit_for(ctx.settings, owner) is not None
    ):
        return None
    try:
        obj = json_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    now = datetime.now(UTC)
    event = parse_event(
        obj,
        now=now,
        check_size=len(body) > MAX_EVENT_BYTES,
        oldest=ctx.settings.oldest_timestamp(now, historical=False),
    )
    if isinstance(event, list) or event.idempotency_key is not None:
        return None
    return await accept_event(ctx, envelope_of(event, owner, now, None), None)
