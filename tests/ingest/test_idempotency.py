"""Idempotency keys: repeats are duplicates with the original ids; reuse with another
payload is 409; one stream entry per key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from bricqs.stream import stream_key
from tests.conftest import Tenant
from tests.ingest.helpers import BATCH, EVENTS, SYNC

EVENT = {
    "event_name": "purchase_completed",
    "participant_id": "user_1",
    "properties": {"amount": 10},
}


@pytest.mark.parametrize("where", ["body", "header"])
def test_async_repeat_is_a_duplicate_with_the_original_ids_and_one_stream_entry(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis, where: str
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    body = dict(EVENT)
    if where == "body":
        body["idempotency_key"] = "order-1"
    else:
        headers["Idempotency-Key"] = "order-1"
    first = ingest.post(EVENTS, headers=headers, json=body)
    second = ingest.post(EVENTS, headers=headers, json=body)
    assert first.status_code == second.status_code == 202
    assert first.json()["duplicate"] is False
    assert second.json()["duplicate"] is True
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["message_id"] == first.json()["message_id"]
    assert second.json()["event_id"] == first.json()["event_id"]
    assert redis_client.xlen(stream_key(0)) == 1


def test_same_key_with_another_payload_is_409(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key, "Idempotency-Key": "order-2"}
    assert ingest.post(EVENTS, headers=headers, json=EVENT).status_code == 202
    response = ingest.post(EVENTS, headers=headers, json={**EVENT, "properties": {"amount": 11}})
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"
    assert redis_client.xlen(stream_key(0)) == 1


def test_key_order_in_properties_does_not_make_a_conflict(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    headers = {"X-API-Key": tenant.live_key, "Idempotency-Key": "order-3"}
    ingest.post(EVENTS, headers=headers, json={**EVENT, "properties": {"a": 1, "b": 2}})
    response = ingest.post(EVENTS, headers=headers, json={**EVENT, "properties": {"b": 2, "a": 1}})
    assert response.json()["duplicate"] is True


def test_batch_dedupes_per_event_and_within_itself(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    keyed = {**EVENT, "idempotency_key": "b-1"}
    first = ingest.post(BATCH, headers=headers, json={"events": [keyed, keyed]}).json()
    assert [r["status"] for r in first["results"]] == ["accepted", "duplicate"]
    assert first["results"][1]["event_id"] == first["results"][0]["event_id"]
    conflicting = {**keyed, "properties": {"amount": 99}}
    second = ingest.post(BATCH, headers=headers, json={"events": [keyed, conflicting]}).json()
    assert [r["status"] for r in second["results"]] == ["duplicate", "rejected"]
    assert second["results"][1]["error"]["code"] == "idempotency_conflict"
    assert (second["accepted"], second["duplicates"], second["rejected"]) == (0, 1, 1)
    assert redis_client.xlen(stream_key(0)) == 1


def test_batch_retried_under_one_header_key_is_all_duplicates(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key, "Idempotency-Key": "batch-7"}
    events = [{**EVENT, "participant_id": f"u{i}"} for i in range(3)]
    first = ingest.post(BATCH, headers=headers, json={"events": events}).json()
    again = ingest.post(BATCH, headers=headers, json={"events": events}).json()
    assert again["accepted"] == 0
    assert again["duplicates"] == 3
    assert [r["event_id"] for r in again["results"]] == [r["event_id"] for r in first["results"]]
    assert redis_client.xlen(stream_key(0)) == 3


def test_sync_repeat_returns_the_original_event_and_fact(
    ingest: TestClient[Any], tenant: Tenant, db: Any
) -> None:
    headers = {"X-API-Key": tenant.live_key, "Idempotency-Key": "sync-1"}
    first = ingest.post(SYNC, headers=headers, json=EVENT).json()
    again = ingest.post(SYNC, headers=headers, json=EVENT).json()
    assert again["duplicate"] is True
    assert (again["event_id"], again["fact_id"], again["processed_at"]) == (
        first["event_id"],
        first["fact_id"],
        first["processed_at"],
    )
    assert db.execute(
        "SELECT count(*) FROM facts WHERE project_id = %s", (tenant.project_id,)
    ).fetchone() == (1,)


def test_sync_key_reused_with_another_payload_is_409(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    headers = {"X-API-Key": tenant.live_key, "Idempotency-Key": "sync-2"}
    ingest.post(SYNC, headers=headers, json=EVENT)
    response = ingest.post(SYNC, headers=headers, json={**EVENT, "participant_id": "other"})
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"


def test_sync_repeat_is_caught_by_postgres_when_redis_forgot_the_key(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key, "Idempotency-Key": "sync-3"}
    first = ingest.post(SYNC, headers=headers, json=EVENT).json()
    redis_client.flushdb()  # Redis' 24 h memory is gone; PostgreSQL's 30 days is not
    again = ingest.post(SYNC, headers=headers, json=EVENT).json()
    assert again["duplicate"] is True
    assert again["event_id"] == first["event_id"]


def test_async_then_sync_with_one_key_is_one_event(ingest: TestClient[Any], tenant: Tenant) -> None:
    headers = {"X-API-Key": tenant.live_key, "Idempotency-Key": "mixed-1"}
    queued = ingest.post(EVENTS, headers=headers, json=EVENT).json()
    synced = ingest.post(SYNC, headers=headers, json=EVENT)
    assert synced.status_code == 200
    assert synced.json()["duplicate"] is True
    assert synced.json()["event_id"] == queued["event_id"]
    assert synced.json()["processed_at"] is None  # still queued: no processor in this test


def test_sync_then_async_with_one_key_is_one_event(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key, "Idempotency-Key": "mixed-2"}
    synced = ingest.post(SYNC, headers=headers, json=EVENT).json()
    queued = ingest.post(EVENTS, headers=headers, json=EVENT).json()
    assert queued["duplicate"] is True
    assert queued["event_id"] == synced["event_id"]
    assert redis_client.xlen(stream_key(0)) == 0


def test_async_repeat_of_a_sync_event_has_a_null_message_id(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    # The original never went through a stream: there is no message id to give back.
    headers = {"X-API-Key": tenant.live_key, "Idempotency-Key": "mixed-3"}
    synced = ingest.post(SYNC, headers=headers, json=EVENT).json()
    queued = ingest.post(EVENTS, headers=headers, json=EVENT).json()
    assert (queued["duplicate"], queued["message_id"]) == (True, None)
    keyed = {**EVENT, "idempotency_key": "mixed-3"}
    batch = ingest.post(BATCH, headers={"X-API-Key": tenant.live_key}, json={"events": [keyed]})
    (result,) = batch.json()["results"]
    assert (result["status"], result["message_id"], result["event_id"]) == (
        "duplicate",
        None,
        synced["event_id"],
    )
    assert redis_client.xlen(stream_key(0)) == 0


def lookups(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "bricqs_ingest_idempotency_lookups_total", {"outcome": outcome}
    )
    return value or 0.0


def days_ago(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


@pytest.mark.parametrize("path", [EVENTS, BATCH])
def test_a_resend_after_redis_forgot_the_key_is_answered_from_postgres(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis, path: str
) -> None:
    # An event that happened two days ago, stored (sync) and then forgotten by Redis.
    event = {**EVENT, "timestamp": days_ago(2), "idempotency_key": "late-1"}
    headers = {"X-API-Key": tenant.live_key}
    stored = ingest.post(SYNC, headers=headers, json=event).json()
    redis_client.flushdb()
    held = lookups("held")
    if path == BATCH:
        answer = ingest.post(BATCH, headers=headers, json={"events": [event]})
        (result,) = answer.json()["results"]
    else:
        answer = ingest.post(EVENTS, headers=headers, json=event)
        result = answer.json()
    assert answer.status_code == 202
    assert result["event_id"] == stored["event_id"]
    assert result["message_id"] is None
    assert result.get("duplicate", result.get("status") == "duplicate") is True
    assert redis_client.xlen(stream_key(0)) == 0  # nothing queued for the processor to drop
    assert lookups("held") == held + 1
    conflicting = {**event, "properties": {"amount": 11}}
    assert ingest.post(EVENTS, headers=headers, json=conflicting).status_code == 409


def test_keyed_events_within_the_redis_window_do_not_ask_postgres(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    before = sum(lookups(o) for o in ("held", "free", "unavailable"))
    headers = {"X-API-Key": tenant.live_key}
    recent = {**EVENT, "timestamp": days_ago(0), "idempotency_key": "fresh-1"}
    untimed = {**EVENT, "idempotency_key": "fresh-2"}
    for body in (recent, untimed):
        assert ingest.post(EVENTS, headers=headers, json=body).json()["duplicate"] is False
    assert sum(lookups(o) for o in ("held", "free", "unavailable")) == before
    old = {**EVENT, "timestamp": days_ago(3), "idempotency_key": "old-new-1"}
    assert ingest.post(EVENTS, headers=headers, json=old).json()["duplicate"] is False
    assert lookups("free") >= 1
    assert redis_client.xlen(stream_key(0)) == 3
