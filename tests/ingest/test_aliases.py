"""The request shape Bricqs' guides document is accepted as aliases of the seed page's:
`event_type`, `attributes`, `occurred_at`, and `Authorization: Bearer bq_…`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from litestar.testing import TestClient

from bricqs.schemas import decode_envelope
from bricqs.stream import stream_key
from tests.conftest import Tenant
from tests.ingest.helpers import BATCH, EVENTS, SYNC

GUIDE_EVENT = {
    "event_type": "purchase_completed",
    "participant_id": "user_1",
    "attributes": {"amount": 10},
    "occurred_at": "2026-04-10T10:30:00Z",
}
SEED_EVENT = {
    "event_name": "purchase_completed",
    "participant_id": "user_1",
    "properties": {"amount": 10},
    "timestamp": "2026-04-10T10:30:00Z",
}


def test_the_guide_shape_is_queued_as_the_seed_shape(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    for _ in range(2):  # the second goes through the fast path (key cached)
        assert ingest.post(EVENTS, headers=headers, json=GUIDE_EVENT).status_code == 202
    batch = ingest.post(BATCH, headers=headers, json={"events": [GUIDE_EVENT, SEED_EVENT]})
    assert batch.json()["accepted"] == 2
    envelopes = [decode_envelope(f[b"e"]) for _, f in redis_client.xrange(stream_key(0))]
    assert len(envelopes) == 4
    for envelope in envelopes:
        assert envelope.event_name == "purchase_completed"
        assert envelope.properties == {"amount": 10}
        assert envelope.occurred_at == datetime(2026, 4, 10, 10, 30, tzinfo=UTC)
    synced = ingest.post(SYNC, headers=headers, json=GUIDE_EVENT)
    assert (synced.status_code, synced.json()["fact_type"]) == (200, "custom.purchase_completed")


def test_a_retry_in_the_other_shape_is_the_same_payload(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    headers = {"X-API-Key": tenant.live_key, "Idempotency-Key": "shape-1"}
    first = ingest.post(EVENTS, headers=headers, json=SEED_EVENT).json()
    again = ingest.post(EVENTS, headers=headers, json=GUIDE_EVENT)
    assert again.status_code == 202
    assert (again.json()["duplicate"], again.json()["event_id"]) == (True, first["event_id"])


def test_both_names_with_different_values_is_422_naming_the_field(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    both = {**SEED_EVENT, "event_type": "refund_issued"}
    for path, body, field in (
        (EVENTS, both, "event_type"),
        (SYNC, both, "event_type"),
        (BATCH, {"events": [SEED_EVENT, both]}, "events[1].event_type"),
    ):
        answer = ingest.post(path, headers=headers, json=body)
        assert answer.status_code in (202, 422)
        document = answer.json()
        errors = document["results"][1]["error"]["errors"] if path == BATCH else document["errors"]
        assert [(e["field"], e["code"]) for e in errors] == [(field, "alias_conflict")]
    same = {**SEED_EVENT, "event_type": SEED_EVENT["event_name"]}
    assert ingest.post(EVENTS, headers=headers, json=same).status_code == 202


def test_a_bearer_token_is_an_api_key(ingest: TestClient[Any], tenant: Tenant) -> None:
    bearer = {"Authorization": f"Bearer {tenant.live_key}"}
    for _ in range(2):  # route, then fast path
        assert ingest.post(EVENTS, headers=bearer, json=SEED_EVENT).status_code == 202
    assert ingest.post(SYNC, headers=bearer, json=SEED_EVENT).status_code == 200
    both = {**bearer, "X-API-Key": tenant.test_key}
    conflict = ingest.post(EVENTS, headers=both, json=SEED_EVENT)
    assert conflict.status_code == 422
    assert [e["field"] for e in conflict.json()["errors"]] == ["Authorization"]
    unknown = {"Authorization": "Bearer bq_live_" + "x" * 40}
    assert ingest.post(EVENTS, headers=unknown, json=SEED_EVENT).json()["code"] == "invalid_api_key"


def test_the_openapi_document_names_the_aliases(ingest: TestClient[Any]) -> None:
    document = ingest.get("/schema/openapi.json").json()
    event = document["components"]["schemas"]["Event"]["properties"]
    assert {"event_type", "attributes", "occurred_at"} <= set(event)
    assert "bearer" in {s.get("scheme") for s in document["components"]["securitySchemes"].values()}
