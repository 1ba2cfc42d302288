"""The plain single event (cached key, no idempotency key, no limit, valid) is answered
by a fast path in front of the route; it must be indistinguishable from the route."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient
from prometheus_client import REGISTRY

from bricqs.schemas import decode_envelope
from bricqs.stream import stream_key
from tests.conftest import Tenant
from tests.ingest.helpers import EVENTS

EVENT = {"event_name": "purchase_completed", "participant_id": "u1", "properties": {"n": 1}}


def fast_answers() -> float:
    return REGISTRY.get_sample_value("bricqs_ingest_fast_path_total") or 0.0


def test_plain_event_answers_like_the_route_and_lands_on_the_stream(
    ingest: TestClient[Any], tenant: Tenant, redis_client: Any
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    # The first request resolves the key (route); the second finds it cached (fast path).
    before = fast_answers()
    first = ingest.post(EVENTS, headers=headers, json=EVENT)
    assert fast_answers() == before
    second = ingest.post(EVENTS, headers=headers, json=EVENT)
    assert fast_answers() == before + 1
    for answer in (first, second):
        assert answer.status_code == 202
        assert answer.headers["content-type"] == "application/json"
        assert set(answer.json()) == {"accepted", "duplicate", "message_id", "event_id"}
        assert answer.json()["accepted"] is True and answer.json()["duplicate"] is False
    entries = redis_client.xrange(stream_key(0))
    assert [e[0].decode() for e in entries] == [a.json()["message_id"] for a in (first, second)]
    envelopes = [decode_envelope(fields[b"e"]) for _, fields in entries]
    assert [e.event_id for e in envelopes] == [a.json()["event_id"] for a in (first, second)]
    for envelope in envelopes:
        assert envelope.project_id == tenant.project_id
        assert envelope.environment == "live"
        assert (envelope.event_name, envelope.participant_id) == ("purchase_completed", "u1")
        assert envelope.properties == {"n": 1}
        assert envelope.idempotency_key is None


def test_requests_the_fast_path_declines_get_the_route_answers(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    assert ingest.post(EVENTS, headers=headers, json=EVENT).status_code == 202  # key cached
    before = fast_answers()
    invalid = ingest.post(EVENTS, headers=headers, json={**EVENT, "event_name": "_bad"})
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["field"] == "event_name"
    malformed = ingest.post(EVENTS, headers=headers, content=b"{not json")
    assert malformed.status_code == 400 and malformed.json()["code"] == "malformed_json"
    empty = ingest.post(EVENTS, headers=headers, content=b"")
    assert empty.status_code == 400 and empty.json()["code"] == "empty_body"
    keyed = {**EVENT, "idempotency_key": "k-1"}
    assert ingest.post(EVENTS, headers=headers, json=keyed).json()["duplicate"] is False
    again = ingest.post(EVENTS, headers=headers, json=keyed)
    assert again.status_code == 202 and again.json()["duplicate"] is True
    header_keyed = ingest.post(EVENTS, headers={**headers, "Idempotency-Key": "k-1"}, json=EVENT)
    assert header_keyed.json()["duplicate"] is True
    unknown = ingest.post(EVENTS, headers={"X-API-Key": "bq_live_" + "x" * 40}, json=EVENT)
    assert unknown.status_code == 401 and unknown.json()["code"] == "invalid_api_key"
    assert ingest.post(EVENTS, json=EVENT).json()["code"] == "missing_api_key"
    too_big = ingest.post(EVENTS, headers=headers, content=b" " * (70 * 1024) + b"{}")
    assert too_big.status_code == 413
    assert fast_answers() == before  # none of these was the plain case
