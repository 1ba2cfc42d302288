"""Who is signed in to the console: a signed, expiring session cookie naming an API key.

The cookie holds the key's hash (never the key itself: a hash cannot call the API) and
an expiry, signed under CONSOLE_SESSION_SECRET. Each request looks the hash up again with
the api's own key lookup, so a revoked key signs its sessions out at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from litestar import Request
from litestar.di import NamedDependency

from bricqs.storage.tenants import Conn, KeyOwner, Tenant, find_key_owner
from bricqs_api.context import ApiClients

SESSION_COOKIE = "bricqs_console"
CONSOLE_SCOPES = frozenset({"read", "admin"})
"""A key needs one of these to sign in: the console's pages read the tenant's state."""


class NotSignedIn(Exception):
    """The request has no valid console session (the console answers with the sign-in page)."""


class ConsoleSessions:
    """Issues and checks session cookie values; `clock` gives Unix seconds (tests pass
    their own instead of waiting)."""

    def __init__(
        self, secret: str, lifetime_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._serializer = URLSafeSerializer(secret, salt="bricqs-console-session")
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock

    def issue(self, key_hash: bytes) -> str:
        """A cookie value for the key with this hash, valid for the session lifetime."""
        expires_at = int(self._clock() + self.lifetime_seconds)
        return self._serializer.dumps({"key": key_hash.hex(), "expires_at": expires_at})

    def key_hash(self, value: str) -> bytes | None:
        """The key hash a cookie value names; None when it is tampered with, signed under
        another secret, malformed or expired."""
        try:
            claims: Any = self._serializer.loads(value)
            expires_at = int(claims["expires_at"])
            key_hash = bytes.fromhex(claims["key"])
        except (BadSignature, KeyError, TypeError, ValueError):
            return None
        return key_hash if expires_at > self._clock() else None


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in key: its tenant and what it may do."""

    owner: KeyOwner

    @property
    def tenant(self) -> Tenant:
        """The (project, environment) every page of this session reads."""
        return Tenant(self.owner.project_id, self.owner.environment)

    def can(self, scope: str) -> bool:
        """Whether the key holds `scope`."""
        return scope in self.owner.scopes


def provide_sessions(clients: NamedDependency[ApiClients]) -> ConsoleSessions:
    """The console's session signer, under the worker's settings."""
    settings = clients.settings
    return ConsoleSessions(settings.console_session_secret, settings.console_session_hours * 3600)


async def provide_user(
    request: Request[Any, Any, Any],
    sessions: NamedDependency[ConsoleSessions],
    conn: NamedDependency[Conn],
) -> ConsoleUser:
    """The signed-in key of the request; NotSignedIn when there is none any more."""
    key_hash = sessions.key_hash(request.cookies.get(SESSION_COOKIE, ""))
    owner = None if key_hash is None else await find_key_owner(conn, key_hash)
    if owner is None or CONSOLE_SCOPES.isdisjoint(owner.scopes):
        raise NotSignedIn
    return ConsoleUser(owner)


def require(user: ConsoleUser, scope: str) -> None:
    """Refuse (403) an action the signed-in key may not do."""
    if not user.can(scope):
        raise ScopeMissing(scope)


class ScopeMissing(Exception):
    """The signed-in key lacks the scope an action needs."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


SignedIn = NamedDependency[ConsoleUser]
