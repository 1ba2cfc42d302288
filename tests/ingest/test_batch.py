"""Batch ingestion: limits, per-event results in order, one stream entry per accepted event."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import redis
from litestar.testing import TestClient

from bricqs.schemas import decode_envelope
from bricqs.stream import stream_key
from tests.conftest import Tenant
from tests.ingest.helpers import BATCH


def event(i: int, **extra: Any) -> dict[str, Any]:
    return {"event_name": "page_view", "participant_id": f"user_{i}", **extra}


def stream_envelopes(client: redis.Redis) -> list[Any]:
    return [decode_envelope(fields[b"e"]) for _, fields in client.xrange(stream_key(0))]


def test_batch_of_zero_events_is_400(ingest: TestClient[Any], tenant: Tenant) -> None:
    response = ingest.post(BATCH, headers={"X-API-Key": tenant.live_key}, json={"events": []})
    assert response.status_code == 400
    assert response.json()["code"] == "empty_batch"


def test_batch_of_101_events_is_400_and_enqueues_nothing(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    response = ingest.post(
        BATCH,
        headers={"X-API-Key": tenant.live_key},
        json={"events": [event(i) for i in range(101)]},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "batch_too_large"
    assert redis_client.xlen(stream_key(0)) == 0


def test_batch_of_100_events_is_accepted_whole(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    response = ingest.post(
        BATCH,
        headers={"X-API-Key": tenant.live_key},
        json={"events": [event(i) for i in range(100)]},
    )
    assert response.status_code == 202
    assert response.json()["accepted"] == 100
    envelopes = stream_envelopes(redis_client)
    assert [e.participant_id for e in envelopes] == [f"user_{i}" for i in range(100)]


@pytest.mark.parametrize("body", [{}, {"events": "x"}, {"events": {"a": 1}}, [1], {"evts": []}])
def test_malformed_envelope_is_400(ingest: TestClient[Any], tenant: Tenant, body: Any) -> None:
    response = ingest.post(BATCH, headers={"X-API-Key": tenant.live_key}, json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_batch"


def test_mixed_batch_reports_each_event_in_order(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    events = [event(0), {"participant_id": "u"}, event(2), "not an object", event(4)]
    response = ingest.post(BATCH, headers={"X-API-Key": tenant.live_key}, json={"events": events})
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 2)
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "accepted",
    ]
    assert body["results"][1]["error"]["errors"][0]["field"] == "events[1].event_name"
    assert body["results"][3]["error"]["errors"][0] == {
        "field": "events[3]",
        "message": "must be a JSON object",
        "code": "invalid_type",
    }
    accepted_ids = [r["message_id"] for r in body["results"] if r["status"] == "accepted"]
    assert body["message_ids"] == accepted_ids
    # Exactly the accepted events are on the stream, with the event ids we were told.
    envelopes = stream_envelopes(redis_client)
    assert [e.event_id for e in envelopes] == [
        r["event_id"] for r in body["results"] if r["status"] == "accepted"
    ]


def test_batch_where_every_event_is_rejected_is_422_with_the_same_body(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    response = ingest.post(
        BATCH, headers={"X-API-Key": tenant.live_key}, json={"events": [{}, {"event_name": "x"}]}
    )
    assert response.status_code == 422
    body = response.json()
    assert (body["accepted"], body["rejected"], body["message_ids"]) == (0, 2, [])
    assert [r["status"] for r in body["results"]] == ["rejected", "rejected"]


def test_batch_body_over_one_mib_is_413(ingest: TestClient[Any], tenant: Tenant) -> None:
    big = [event(i, properties={"blob": "x" * 20_000}) for i in range(60)]
    response = ingest.post(BATCH, headers={"X-API-Key": tenant.live_key}, json={"events": big})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_event_over_32_kib_inside_a_batch_is_rejected_alone(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    events = [event(0), event(1, properties={"blob": "x" * 33_000}), event(2)]
    response = ingest.post(BATCH, headers={"X-API-Key": tenant.live_key}, json={"events": events})
    assert response.status_code == 202
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1]["error"]["errors"][0]["code"] == "too_large"


def test_stream_envelope_carries_tenant_and_receive_time(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    ingest.post(
        BATCH,
        headers={"X-API-Key": tenant.test_key},
        json={"events": [event(0, properties={"a": [1, {"b": None}]})]},
    )
    (envelope,) = stream_envelopes(redis_client)
    assert (envelope.project_id, envelope.environment) == (tenant.project_id, "test")
    assert envelope.properties == {"a": [1, {"b": None}]}
    assert envelope.occurred_at == envelope.received_at
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(envelope), type=type(envelope)) == envelope
