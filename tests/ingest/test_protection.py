"""Rate limits (429 with Retry-After and RateLimit-* headers, shared through Redis),
gzip bodies with limits on the inflated size, and backpressure on a growing backlog."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
from litestar.testing import TestClient

from bricqs.storage import tenants
from bricqs.stream import CONSUMER_GROUP, stream_key
from bricqs_devstack.servers import Server
from bricqs_ingest.app import create_app
from tests.conftest import Tenant
from tests.ingest.conftest import ingest_settings
from tests.ingest.helpers import BATCH, EVENTS, SYNC

EVENT = {"event_name": "tap", "participant_id": "p"}
# One token every 1,000 s: the burst tests count exact refusals, which a refill of 1/s broke
# whenever a loaded CI machine took over a second for a test's requests.
BARELY = 0.001


def client(redis_server: Server, postgres_server: Server, **overrides: Any) -> TestClient[Any]:
    app = create_app(ingest_settings(redis_server.url, postgres_server.url, **overrides))
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture
def limited(
    redis_server: Server, postgres_server: Server, redis_client: Any
) -> Iterator[TestClient[Any]]:
    # A bucket of 100 that barely refills: the 101st event in a burst is refused.
    with client(
        redis_server, postgres_server, rate_limit_per_second=BARELY, rate_limit_burst=100
    ) as c:
        yield c


def test_single_events_beyond_the_burst_get_429_with_headers(
    limited: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    answers = [limited.post(EVENTS, headers=headers, json=EVENT) for _ in range(101)]
    assert [a.status_code for a in answers[:100]] == [202] * 100
    assert answers[99].headers["RateLimit-Remaining"] == "0"
    refused = answers[100]
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Limit"] == "100"
    assert redis_client.xlen(stream_key(0)) == 100  # the refused event was not queued
    # The other environment's key has its own bucket.
    assert (
        limited.post(EVENTS, headers={"X-API-Key": tenant.test_key}, json=EVENT).status_code == 202
    )


def test_a_batch_is_admitted_whole_or_refused_whole(
    limited: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    events = [{**EVENT, "participant_id": f"p{i}"} for i in range(60)]
    assert limited.post(BATCH, headers=headers, json={"events": events}).status_code == 202
    refused = limited.post(BATCH, headers=headers, json={"events": events})  # 40 tokens left
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert redis_client.xlen(stream_key(0)) == 60
    assert limited.post(SYNC, headers=headers, json=EVENT).status_code == 200  # 1 of 40 left


def test_the_bucket_is_shared_by_every_worker(
    redis_server: Server, postgres_server: Server, tenant: Tenant, redis_client: Any
) -> None:
    # Two apps stand for two workers (or pods): they draw on one bucket in Redis.
    with (
        client(
            redis_server, postgres_server, rate_limit_per_second=BARELY, rate_limit_burst=100
        ) as a,
        client(
            redis_server, postgres_server, rate_limit_per_second=BARELY, rate_limit_burst=100
        ) as b,
    ):
        headers = {"X-API-Key": tenant.live_key}
        codes = [
            (a if i % 2 else b).post(EVENTS, headers=headers, json=EVENT).status_code
            for i in range(102)
        ]
    assert codes.count(202) == 100 and codes.count(429) == 2


def test_a_projects_own_limit_overrides_the_default(
    redis_server: Server, postgres_server: Server, tenant: Tenant, redis_client: Any
) -> None:
    async def set_limit() -> None:
        async with await psycopg.AsyncConnection.connect(
            postgres_server.url, autocommit=True
        ) as conn:
            await tenants.set_rate_limit(conn, tenant.project_id, BARELY, 100)

    asyncio.run(set_limit())
    with client(redis_server, postgres_server) as c:  # no default limit
        headers = {"X-API-Key": tenant.live_key}
        codes = [c.post(EVENTS, headers=headers, json=EVENT).status_code for _ in range(101)]
    assert codes[-1] == 429 and codes.count(202) == 100


def test_tokens_come_back_over_time(
    redis_server: Server, postgres_server: Server, tenant: Tenant, redis_client: Any
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    with client(
        redis_server, postgres_server, rate_limit_per_second=1.0, rate_limit_burst=100
    ) as limited:
        # Drain the bucket (a slow machine may see a token or two come back meanwhile).
        codes = [limited.post(EVENTS, headers=headers, json=EVENT).status_code for _ in range(150)]
        assert 429 in codes
        deadline = time.monotonic() + 10
        while limited.post(EVENTS, headers=headers, json=EVENT).status_code == 429:
            assert time.monotonic() < deadline, "no token came back within 10 s at 1 token/s"
            time.sleep(0.25)


def test_gzip_bodies_are_accepted(ingest: TestClient[Any], tenant: Tenant) -> None:
    headers = {"X-API-Key": tenant.live_key, "Content-Encoding": "gzip"}
    body = gzip.compress(json.dumps({"events": [EVENT, EVENT]}).encode())
    response = ingest.post(BATCH, headers=headers, content=body)
    assert (response.status_code, response.json()["accepted"]) == (202, 2)
    single = ingest.post(EVENTS, headers=headers, content=gzip.compress(json.dumps(EVENT).encode()))
    assert single.status_code == 202


def test_a_zip_bomb_is_413_not_memory_exhaustion(ingest: TestClient[Any], tenant: Tenant) -> None:
    # 64 MiB of zeros in about 64 KB; only the first limit + 1 bytes are ever inflated.
    bomb = gzip.compress(b"0" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 1024 * 1024
    for path in (EVENTS, BATCH, SYNC):
        response = ingest.post(
            path, headers={"X-API-Key": tenant.live_key, "Content-Encoding": "gzip"}, content=bomb
        )
        assert (response.status_code, response.json()["code"]) == (413, "payload_too_large"), path


@pytest.mark.parametrize(
    ("encoding", "body", "status", "code"),
    [
        ("gzip", b"not gzip at all", 400, "malformed_gzip"),
        ("gzip", gzip.compress(b'{"event_name": "a"}')[:-8], 400, "malformed_gzip"),
        ("br", b"{}", 415, "unsupported_content_encoding"),
    ],
)
def test_bad_encodings_are_4xx(
    ingest: TestClient[Any], tenant: Tenant, encoding: str, body: bytes, status: int, code: str
) -> None:
    response = ingest.post(
        EVENTS, headers={"X-API-Key": tenant.live_key, "Content-Encoding": encoding}, content=body
    )
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_backpressure_when_the_backlog_passes_the_bound(
    redis_server: Server, postgres_server: Server, tenant: Tenant, redis_client: redis.Redis
) -> None:
    with client(redis_server, postgres_server, max_backlog=5, backlog_check_ms=50) as c:
        headers = {"X-API-Key": tenant.live_key}
        for _ in range(6):
            assert c.post(EVENTS, headers=headers, json=EVENT).status_code == 202
        deadline = time.monotonic() + 10
        while (answer := c.post(EVENTS, headers=headers, json=EVENT)).status_code == 202:
            assert time.monotonic() < deadline, "backpressure never engaged"
            time.sleep(0.05)
        assert (answer.status_code, answer.json()["code"]) == (503, "ingest_backpressure")
        assert answer.headers["Retry-After"] == "1"
        # A processor catches up: the group has read and acknowledged everything.
        key = stream_key(0)
        redis_client.xgroup_create(key, CONSUMER_GROUP, id="$")
        deadline = time.monotonic() + 10
        while c.post(EVENTS, headers=headers, json=EVENT).status_code == 503:
            assert time.monotonic() < deadline, "backpressure never released"
            time.sleep(0.05)


@pytest.mark.parametrize("path", [EVENTS, SYNC])
def test_a_gzip_body_is_held_to_the_event_size_limit_once_inflated(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis, path: str
) -> None:
    # 60 KiB of properties compress to a few hundred bytes: the inflated event is too large.
    event = {**EVENT, "properties": {"text": "a" * (60 * 1024)}}
    body = gzip.compress(json.dumps(event).encode())
    assert len(body) < 32 * 1024
    response = ingest.post(
        path, headers={"X-API-Key": tenant.live_key, "Content-Encoding": "gzip"}, content=body
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "too_large"
    assert redis_client.xlen(stream_key(0)) == 0


@pytest.fixture
def sharded(
    redis_server: Server, postgres_server: Server, redis_client: Any
) -> Iterator[TestClient[Any]]:
    # Four shards, a bucket of 100 that barely refills: the limit is the key's, not a shard's.
    with client(
        redis_server,
        postgres_server,
        stream_shards=4,
        rate_limit_per_second=BARELY,
        rate_limit_burst=100,
    ) as c:
        yield c


def queued(redis_client: redis.Redis, shards: int = 4) -> int:
    return sum(redis_client.xlen(stream_key(s)) for s in range(shards))


def spread(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Events for `n` participants, which land on every shard."""
    return [{**EVENT, "participant_id": f"p{i}"} for i in range(start, start + n)]


def test_with_several_shards_a_key_gets_its_burst_once_not_once_per_shard(
    sharded: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    codes = [sharded.post(EVENTS, headers=headers, json=e).status_code for e in spread(160)]
    assert codes[:100] == [202] * 100
    assert set(codes[100:]) == {429}
    assert queued(redis_client) == 100


def test_a_batch_across_shards_is_refused_whole_when_the_key_lacks_tokens(
    sharded: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    first = sharded.post(BATCH, headers=headers, json={"events": spread(60)})
    assert (first.status_code, first.json()["accepted"]) == (202, 60)
    refused = sharded.post(BATCH, headers=headers, json={"events": spread(60, 60)})
    assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited")
    assert queued(redis_client) == 60  # nothing of the refused batch, on any shard
    rest = sharded.post(BATCH, headers=headers, json={"events": spread(30, 60)})
    assert (rest.status_code, rest.json()["accepted"]) == (202, 30)


def test_sync_calls_take_tokens_without_leaving_keys_behind(
    sharded: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    for event in spread(5):
        assert sharded.post(SYNC, headers=headers, json=event).status_code == 200
    assert len(redis_client.keys("bricqs:rl:*")) == 1  # the key's bucket, nothing per call
    codes = [sharded.post(EVENTS, headers=headers, json=e).status_code for e in spread(100)]
    assert codes.count(202) == 95


def test_repeats_of_a_keyed_event_cost_no_tokens(
    sharded: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    keyed = {**EVENT, "idempotency_key": "once"}
    answers = [sharded.post(EVENTS, headers=headers, json=keyed) for _ in range(120)]
    assert [a.status_code for a in answers] == [202] * 120
    assert sum(a.json()["duplicate"] for a in answers) == 119
    codes = [sharded.post(EVENTS, headers=headers, json=e).status_code for e in spread(100)]
    assert codes.count(202) == 99
