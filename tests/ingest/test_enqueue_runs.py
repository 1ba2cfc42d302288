"""Plain events that follow each other in a pipeline are XADDed by one script call; the
stream must still hold every event once, in request order, under the id answered."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from bricqs.schemas import decode_envelope
from bricqs.stream import stream_key
from tests.conftest import Tenant
from tests.ingest.helpers import BATCH


def test_batch_mixing_plain_and_keyed_events_keeps_order_and_ids(
    ingest: TestClient[Any], tenant: Tenant, redis_client: Any
) -> None:
    events: list[dict[str, Any]] = [
        {"event_name": "e", "participant_id": f"p{i}", "properties": {"i": i}} for i in range(12)
    ]
    for i in (3, 4, 9):  # keyed events break the runs of plain ones
        events[i]["idempotency_key"] = f"key-{i}"
    answer = ingest.post(BATCH, headers={"X-API-Key": tenant.live_key}, json={"events": events})
    assert answer.status_code == 202
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["accepted"] * 12
    entries = redis_client.xrange(stream_key(0))
    assert [e[0].decode() for e in entries] == [r["message_id"] for r in results]
    envelopes = [decode_envelope(fields[b"e"]) for _, fields in entries]
    assert [e.properties["i"] for e in envelopes] == list(range(12))
    assert [e.event_id for e in envelopes] == [r["event_id"] for r in results]
