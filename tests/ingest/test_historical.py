"""Historical imports at the batch endpoint: older timestamps than live events may carry,
their own streams, and keys that may only import."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis
from litestar.testing import TestClient

from bricqs.participant_tokens import ParticipantTokens
from bricqs.schemas import decode_envelope
from bricqs.storage import tenants
from bricqs.stream import historical_stream_key, shard_for, stream_key
from bricqs_devstack.servers import Server
from bricqs_ingest.app import create_app
from tests.conftest import PARTICIPANT_TOKEN_SECRET, Tenant
from tests.ingest.conftest import ingest_settings
from tests.ingest.helpers import BATCH, EVENTS

LIVE_HOURS = 24
OLD = (datetime.now(UTC) - timedelta(days=400)).isoformat()


@pytest.fixture
def limited_ingest(
    redis_server: Server, postgres_server: Server, redis_client: Any
) -> Iterator[TestClient[Any]]:
    """Ingest whose live events may be at most a day old."""
    settings = ingest_settings(
        redis_server.url,
        postgres_server.url,
        live_max_event_age_hours=LIVE_HOURS,
        historical_max_event_age_days=1000,
        participant_token_secret=PARTICIPANT_TOKEN_SECRET,
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client


def key_with(database_url: str, project_id: str, *scopes: tenants.Scope) -> str:
    async def mint() -> str:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            _, plain = await tenants.create_key(conn, project_id, "live", scopes=scopes)
        return plain

    return asyncio.run(mint())


def batch(*timestamps: str, historical: bool | None = None) -> dict[str, Any]:
    events = [
        {"event_name": "lesson_done", "participant_id": f"u{i}", "timestamp": t}
        for i, t in enumerate(timestamps)
    ]
    return (
        {"events": events} if historical is None else {"events": events, "historical": historical}
    )


def envelopes(client: redis.Redis, key: str) -> list[Any]:
    return [decode_envelope(fields[b"e"]) for _, fields in client.xrange(key)]


def test_old_timestamps_are_refused_live_and_accepted_as_historical(
    limited_ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    live = limited_ingest.post(BATCH, headers=headers, json=batch(OLD))
    assert live.status_code == 422
    (error,) = live.json()["results"][0]["error"]["errors"]
    assert (live.json()["results"][0]["error"]["code"], error["code"]) == (
        "validation_failed",
        "too_old",
    )
    assert error["field"] == "events[0].timestamp"

    imported = limited_ingest.post(BATCH, headers=headers, json=batch(OLD, historical=True))
    assert imported.status_code == 202, imported.text
    assert imported.json()["accepted"] == 1
    assert redis_client.xlen(stream_key(0)) == 0
    (envelope,) = envelopes(redis_client, historical_stream_key(0))
    assert envelope.historical is True
    assert envelope.occurred_at == datetime.fromisoformat(OLD)


def test_the_live_limit_applies_to_single_events_too(
    limited_ingest: TestClient[Any], tenant: Tenant
) -> None:
    body = {"event_name": "lesson_done", "participant_id": "u1", "timestamp": OLD}
    response = limited_ingest.post(EVENTS, headers={"X-API-Key": tenant.live_key}, json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "too_old"


def test_historical_timestamps_are_bounded_in_the_past_and_the_future(
    limited_ingest: TestClient[Any], tenant: Tenant
) -> None:
    now = datetime.now(UTC)
    too_old = (now - timedelta(days=1001)).isoformat()
    future = (now + timedelta(hours=2)).isoformat()
    response = limited_ingest.post(
        BATCH, headers={"X-API-Key": tenant.live_key}, json=batch(too_old, future, historical=True)
    )
    assert response.status_code == 422
    codes = [r["error"]["errors"][0]["code"] for r in response.json()["results"]]
    assert codes == ["too_old", "in_future"]


def test_a_key_with_import_alone_sends_historical_batches_only(
    limited_ingest: TestClient[Any], tenant: Tenant, postgres_server: Server
) -> None:
    headers = {"X-API-Key": key_with(postgres_server.url, tenant.project_id, "import")}
    now = datetime.now(UTC).isoformat()

    live_batch = limited_ingest.post(BATCH, headers=headers, json=batch(now))
    assert live_batch.status_code == 403
    assert live_batch.json()["code"] == "historical_required"
    single = {"event_name": "lesson_done", "participant_id": "u1"}
    live_single = limited_ingest.post(EVENTS, headers=headers, json=single)
    assert live_single.status_code == 403
    assert live_single.json()["code"] == "insufficient_scope"

    imported = limited_ingest.post(BATCH, headers=headers, json=batch(OLD, historical=True))
    assert imported.status_code == 202, imported.text


def test_a_participant_token_cannot_import(
    limited_ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    token, _ = ParticipantTokens(PARTICIPANT_TOKEN_SECRET).mint(tenant.project_id, "live", "u0")
    headers = {"Authorization": f"Bearer {token}"}
    response = limited_ingest.post(BATCH, headers=headers, json=batch(OLD, historical=True))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert redis_client.xlen(historical_stream_key(0)) == 0


def test_historical_on_an_event_is_refused_rather_than_sent_live(
    limited_ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    body = {"event_name": "lesson_done", "participant_id": "u1", "historical": True}
    in_batch = limited_ingest.post(BATCH, headers=headers, json={"events": [body]})
    assert in_batch.status_code == 422
    error = in_batch.json()["results"][0]["error"]["errors"][0]
    assert (error["field"], error["code"]) == ("events[0].historical", "batch_field")
    single = limited_ingest.post(EVENTS, headers=headers, json=body)
    assert single.status_code == 422
    assert single.json()["errors"][0]["code"] == "batch_field"
    assert redis_client.xlen(stream_key(0)) == 0


def test_historical_must_be_a_boolean(limited_ingest: TestClient[Any], tenant: Tenant) -> None:
    body = {"events": [{"event_name": "a", "participant_id": "u"}], "historical": "yes"}
    response = limited_ingest.post(BATCH, headers={"X-API-Key": tenant.live_key}, json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_batch"


def test_historical_events_of_a_participant_go_to_their_shards_historical_stream(
    redis_server: Server, postgres_server: Server, redis_client: redis.Redis, tenant: Tenant
) -> None:
    settings = ingest_settings(redis_server.url, postgres_server.url, stream_shards=4)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        body = batch(*[OLD] * 20, historical=True)
        response = client.post(
            BATCH, headers={"X-API-Key": tenant.live_key, "Idempotency-Key": "imp-1"}, json=body
        )
        assert response.status_code == 202
        again = client.post(
            BATCH, headers={"X-API-Key": tenant.live_key, "Idempotency-Key": "imp-1"}, json=body
        )
        assert again.json()["duplicates"] == 20
    for shard in range(4):
        assert redis_client.xlen(stream_key(shard)) == 0
        for envelope in envelopes(redis_client, historical_stream_key(shard)):
            assert shard_for(envelope.project_id, envelope.participant_id, 4) == shard
    assert sum(redis_client.xlen(historical_stream_key(s)) for s in range(4)) == 20


def test_a_backlog_of_imports_holds_imports_back_and_never_live_events(
    redis_server: Server, postgres_server: Server, tenant: Tenant, redis_client: redis.Redis
) -> None:
    settings = ingest_settings(
        redis_server.url, postgres_server.url, historical_max_backlog=5, backlog_check_ms=50
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        headers = {"X-API-Key": tenant.live_key}
        assert (
            client.post(BATCH, headers=headers, json=batch(*[OLD] * 6, historical=True)).status_code
            == 202
        )
        deadline = time.monotonic() + 10
        while (
            answer := client.post(BATCH, headers=headers, json=batch(OLD, historical=True))
        ).status_code == 202:
            assert time.monotonic() < deadline, "backpressure on imports never engaged"
            time.sleep(0.05)
        assert (answer.status_code, answer.json()["code"]) == (503, "ingest_backpressure")
        live = client.post(BATCH, headers=headers, json=batch(datetime.now(UTC).isoformat()))
        assert live.status_code == 202


def paced_ingest(redis_server: Server, postgres_server: Server, rate: float) -> TestClient[Any]:
    settings = ingest_settings(
        redis_server.url, postgres_server.url, historical_rate_per_second=rate
    )
    return TestClient(create_app(settings), base_url="http://127.0.0.1")


def test_an_import_faster_than_its_pace_is_held_for_its_turn_not_refused(
    redis_server: Server, postgres_server: Server, tenant: Tenant, redis_client: redis.Redis
) -> None:
    # 100 events a batch at 250 events/s: each batch after the first waits 0.4 s for its
    # turn, well inside the 2 s a batch may be held.
    with paced_ingest(redis_server, postgres_server, 250) as client:
        headers = {"X-API-Key": tenant.live_key}
        answers = [
            client.post(BATCH, headers=headers, json=batch(*[OLD] * 100, historical=True))
            for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [202] * 3
    assert redis_client.xlen(historical_stream_key(0)) == 300


def test_an_import_that_would_wait_too_long_for_its_turn_is_refused_with_retry_after(
    redis_server: Server, postgres_server: Server, tenant: Tenant, redis_client: redis.Redis
) -> None:
    # At 10 events/s a second batch of 100 would wait 10 s: refused at once, not queued.
    with paced_ingest(redis_server, postgres_server, 10) as client:
        headers = {"X-API-Key": tenant.live_key}
        first = client.post(BATCH, headers=headers, json=batch(*[OLD] * 100, historical=True))
        second = client.post(BATCH, headers=headers, json=batch(*[OLD] * 100, historical=True))
        # Live traffic of the same key, and another key's import, are not paced by it.
        now = datetime.now(UTC).isoformat()
        live = [client.post(BATCH, headers=headers, json=batch(*[now] * 100)) for _ in range(2)]
        other_key = key_with(postgres_server.url, tenant.project_id, "import")
        other = client.post(
            BATCH, headers={"X-API-Key": other_key}, json=batch(*[OLD] * 100, historical=True)
        )
    assert first.status_code == 202
    assert (second.status_code, second.json()["code"]) == (429, "rate_limited")
    assert int(second.headers["Retry-After"]) >= 9
    assert [a.status_code for a in live] == [202, 202]
    assert other.status_code == 202
    assert redis_client.xlen(historical_stream_key(0)) == 200
    assert redis_client.xlen(stream_key(0)) == 200
