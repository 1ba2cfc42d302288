"""CORS for the routes that take participant tokens, allowed per project; off by default.

A preflight carries no credentials, so it cannot say which project it is for: it succeeds
when some project allows its origin and the route takes participant tokens with that
method. The actual answer names the origin (Access-Control-Allow-Origin) only when the
token's own project allows it, so a browser shows one project's answers only to that
project's pages. Requests without an Origin header (servers, the ingest hot path) pass
untouched; nothing here relaxes what a route demands of its caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from bricqs.participant_tokens import ParticipantTokens
from bricqs.web.auth import declared_scopes, presented_participant_token

log = logging.getLogger("bricqs.cors")

OriginsLookup = Callable[[], Awaitable[Mapping[str, frozenset[str]]]]
ALLOWED_HEADERS = "authorization, content-type, idempotency-key"
PREFLIGHT_MAX_AGE = "600"


class ProjectOrigins:
    """Which projects allow each origin, re-read from the database every `ttl` seconds
    (so a change applies within it); when the database cannot be read, the last answer
    stays (at first: none allowed)."""

    def __init__(
        self, lookup: OriginsLookup, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._clock = clock
        self._origins: Mapping[str, frozenset[str]] = {}
        self._expires = float("-inf")

    async def projects_allowing(self, origin: str) -> frozenset[str]:
        """The projects whose pages on `origin` may call their participant-token routes."""
        now = self._clock()
        if now >= self._expires:
            try:
                self._origins = await self._lookup()
            except Exception:
                log.warning("allowed origins could not be read; keeping the last ones")
            self._expires = now + self._ttl
        return self._origins.get(origin, frozenset())


def token_methods(app: Litestar) -> dict[str, frozenset[str]]:
    """Per route path, the methods whose handlers take participant tokens."""
    methods: dict[str, frozenset[str]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        allowed = {
            method
            for handler in route.route_handlers
            if isinstance(handler, HTTPRouteHandler) and declared_scopes(handler)[1]
            for method in handler.http_methods
        }
        if allowed:
            methods[route.path_format] = frozenset(allowed)
    return methods


def participant_cors(
    context: Callable[[Litestar], tuple[ProjectOrigins, ParticipantTokens]],
) -> Callable[[ASGIApp], ASGIApp]:
    """Litestar middleware: CORS for the participant-token routes. `context` finds the
    app's allowed origins and token checker (made in its lifespan)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def handle(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            origin = _header(scope, b"origin")
            if origin is None:
                await app(scope, receive, send)
                return
            litestar = Litestar.from_scope(scope)
            methods = _methods(litestar).get(scope.get("path_template") or "", frozenset())
            origins, tokens = context(litestar)
            if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
                await _preflight(scope, send, origin, methods, origins)
                return
            await app(scope, receive, await _allow_origin(scope, send, origin, origins, tokens))

        return handle

    return middleware


_METHODS_KEY = "bricqs_cors_token_methods"


def _methods(app: Litestar) -> dict[str, frozenset[str]]:
    cached: dict[str, frozenset[str]] | None = getattr(app.state, _METHODS_KEY, None)
    if cached is None:
        cached = token_methods(app)
        setattr(app.state, _METHODS_KEY, cached)
    return cached


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _preflight(
    scope: Scope,
    send: Send,
    origin: str,
    methods: frozenset[str],
    origins: ProjectOrigins,
) -> None:
    wanted = _header(scope, b"access-control-request-method") or ""
    allowed = bool(methods) and wanted in methods and bool(await origins.projects_allowing(origin))
    headers = [(b"vary", b"Origin")]
    if allowed:
        headers += [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", ", ".join(sorted(methods)).encode()),
            (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
        ]
    # Refused: no Access-Control-Allow-Origin, so the browser stops there.
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 204 if allowed else 403,
        "headers": headers,
    }
    body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": b"", "more_body": False}
    await send(start)
    await send(body)


async def _allow_origin(
    scope: Scope, send: Send, origin: str, origins: ProjectOrigins, tokens: ParticipantTokens
) -> Send:
    """`send`, adding Access-Control-Allow-Origin when the token's project allows `origin`."""
    token = presented_participant_token(_header(scope, b"authorization"))
    grant = tokens.check(token) if token else None
    if grant is None or grant.project_id not in await origins.projects_allowing(origin):
        return send

    async def send_allowing(message: Message) -> None:
        if message["type"] == "http.response.start":
            extra: Any = [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"vary", b"Origin"),
            ]
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return send_allowing
