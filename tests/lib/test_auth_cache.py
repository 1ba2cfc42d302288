"""The in-memory key cache: TTLs, negative caching, one lookup per key at a time, and
stale answers while the key store is unreachable."""

from __future__ import annotations

import asyncio

import pytest

from bricqs.auth import AuthUnavailable, KeyCache
from bricqs.keys import generate_key, hash_key
from bricqs.storage.tenants import KeyOwner

OWNER = KeyOwner("prj_1", "live")


class KeyStore:
    """An in-memory key store that counts lookups and can be made unreachable."""

    def __init__(self) -> None:
        self.owners: dict[bytes, KeyOwner] = {}
        self.lookups = 0
        self.down = False
        self.delay = 0.0

    async def lookup(self, digest: bytes) -> KeyOwner | None:
        self.lookups += 1
        await asyncio.sleep(self.delay)
        if self.down:
            raise ConnectionError("down")
        return self.owners.get(digest)


def test_known_key_is_looked_up_once_within_the_ttl() -> None:
    async def scenario() -> None:
        store, key = KeyStore(), generate_key("live")
        store.owners[hash_key(key)] = OWNER
        cache = KeyCache(store.lookup, ttl=60)
        assert [await cache.owner(key) for _ in range(5)] == [OWNER] * 5
        assert store.lookups == 1

    asyncio.run(scenario())


def test_entries_expire_after_the_ttl() -> None:
    async def scenario() -> None:
        store, key = KeyStore(), generate_key("live")
        store.owners[hash_key(key)] = OWNER
        cache = KeyCache(store.lookup, ttl=0.05)
        await cache.owner(key)
        del store.owners[hash_key(key)]  # revoked
        await asyncio.sleep(0.1)
        assert await cache.owner(key) is None
        assert store.lookups == 2

    asyncio.run(scenario())


def test_malformed_keys_are_refused_without_a_lookup() -> None:
    async def scenario() -> None:
        store = KeyStore()
        cache = KeyCache(store.lookup)
        assert await cache.owner("bq_live_short") is None
        assert store.lookups == 0

    asyncio.run(scenario())


def test_concurrent_requests_for_one_key_share_one_lookup() -> None:
    async def scenario() -> None:
        store, key = KeyStore(), generate_key("live")
        store.owners[hash_key(key)] = OWNER
        store.delay = 0.05
        cache = KeyCache(store.lookup)
        results = await asyncio.gather(*(cache.owner(key) for _ in range(20)))
        assert results == [OWNER] * 20
        assert store.lookups == 1

    asyncio.run(scenario())


def test_known_key_is_served_stale_while_the_store_is_down_but_unknown_is_unavailable() -> None:
    async def scenario() -> None:
        store, key = KeyStore(), generate_key("live")
        store.owners[hash_key(key)] = OWNER
        cache = KeyCache(store.lookup, ttl=0.01, stale_ttl=60)
        await cache.owner(key)
        await asyncio.sleep(0.02)
        store.down = True
        assert await cache.owner(key) == OWNER
        with pytest.raises(AuthUnavailable):
            await cache.owner(generate_key("live"))

    asyncio.run(scenario())


def test_cache_size_is_bounded() -> None:
    async def scenario() -> None:
        store = KeyStore()
        cache = KeyCache(store.lookup, max_entries=10)
        for _ in range(50):
            await cache.owner(generate_key("test"))
        assert len(cache._entries) == 10

    asyncio.run(scenario())


def test_a_key_read_recently_outlives_keys_not_read_since() -> None:
    async def scenario() -> None:
        store = KeyStore()
        keys = [generate_key("live") for _ in range(4)]
        for key in keys:
            store.owners[hash_key(key)] = OWNER
        cache = KeyCache(store.lookup, max_entries=3)
        for key in keys[:3]:
            await cache.owner(key)
        assert cache.cached_owner(keys[0]) == OWNER  # read: now the most recent
        await cache.owner(keys[3])  # one over the bound: the least recently read goes
        assert cache.cached_owner(keys[0]) == OWNER
        assert cache.cached_owner(keys[1]) is None
        lookups = store.lookups
        await cache.owner(keys[0])
        assert store.lookups == lookups  # still cached, no new lookup

    asyncio.run(scenario())
