"""API-key authentication with an in-memory TTL cache.

The ingest hot path must not query PostgreSQL per request, so each process remembers
what a key hash resolved to for `ttl` seconds (unknown keys for `negative_ttl`).
Consequence, documented in the README: a revoked key keeps working for up to `ttl`
seconds in each process. When PostgreSQL cannot be reached, a known key whose entry
has expired is still honoured (stale) for up to `stale_ttl`, so a database blip does
not turn into an ingest outage; an unknown key then gets 503, not 401.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bricqs.keys import hash_key, key_environment
from bricqs.storage.tenants import KeyOwner

OwnerLookup = Callable[[bytes], Awaitable[KeyOwner | None]]


class AuthUnavailable(Exception):
    """The key store could not be asked and nothing usable is cached."""


class ConflictingKeys(Exception):
    """X-API-Key and Authorization: Bearer name two different keys."""


def presented_key(api_key: str | None, authorization: str | None) -> str | None:
    """The API key a request presents: the X-API-Key header, or `Authorization: Bearer
    bq_…` (the form Bricqs' guides show). Another kind of bearer token is not ours and is
    ignored (a proxy may add one). Raises ConflictingKeys when the two differ."""
    bearer = None
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token.startswith("bq_"):
            bearer = token
    if api_key and bearer and api_key != bearer:
        raise ConflictingKeys("X-API-Key and Authorization name different keys")
    return api_key or bearer


@dataclass
class _Entry:
    owner: KeyOwner | None
    expires: float
    stale_until: float


class KeyCache:
    """Resolves presented keys to their owner, remembering answers for a while.

    At most `max_entries` answers are kept; past that the least recently read goes, so
    keys in steady use stay cached while a flood of random keys churns only itself.
    """

    def __init__(
        self,
        lookup: OwnerLookup,
        *,
        ttl: float = 30.0,
        negative_ttl: float = 5.0,
        stale_ttl: float = 3600.0,
        max_entries: int = 100_000,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._stale_ttl = stale_ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[KeyOwner | None]] = {}

    async def owner(self, key: str) -> KeyOwner | None:
        """The owner of `key`, or None when it is malformed, unknown or revoked."""
        if key_environment(key) is None:
            return None
        digest = hash_key(key)
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is not None and entry.expires > now:
            self._entries.move_to_end(digest)
            return entry.owner
        pending = self._inflight.get(digest)
        if pending is not None:  # one lookup per key at a time, however many requests wait
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyOwner | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            owner = await self._resolve(digest, entry, now)
            future.set_result(owner)
            return owner
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._inflight[digest]

    def cached_owner(self, key: str) -> KeyOwner | None:
        """The owner of `key` if a fresh answer is cached; None otherwise (unknown, expired,
        malformed, or never looked up: ask `owner`)."""
        if key_environment(key) is None:
            return None
        digest = hash_key(key)
        entry = self._entries.get(digest)
        if entry is not None and entry.expires > time.monotonic():
            self._entries.move_to_end(digest)
            return entry.owner
        return None

    async def _resolve(self, digest: bytes, entry: _Entry | None, now: float) -> KeyOwner | None:
        try:
            owner = await self._lookup(digest)
        except Exception as exc:
            if entry is not None and entry.owner is not None and entry.stale_until > now:
                return entry.owner
            raise AuthUnavailable("the key store is unreachable") from exc
        ttl = self._ttl if owner is not None else self._negative_ttl
        self._entries[digest] = _Entry(owner, now + ttl, now + self._stale_ttl)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return owner
