"""The three curl examples of the public Events API page, sent as written with curl to
the ingest service running under Granian, get responses of the shapes the page shows."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from bricqs_devstack.servers import Server
from tests.conftest import Tenant
from tests.ingest.helpers import granian_ingest

pytestmark = pytest.mark.slow

STREAM_ID = re.compile(r"^\d+-\d+$")

# The page's commands, byte for byte, but for the domain and the key.
ASYNC_EXAMPLE = """curl -X POST https://YOUR_API_DOMAIN/api/v1/ingest/events \\
  -H "X-API-Key: bq_live_your_key" \\
  -H "Content-Type: application/json" \\
  -d '{
    "event_name": "purchase_completed",
    "participant_id": "user_123",
    "properties": {
      "amount": 49.99,
      "currency": "USD",
      "product_id": "prod_abc"
    },
    "timestamp": "2026-04-10T10:30:00Z"
  }'"""

BATCH_EXAMPLE = """curl -X POST https://YOUR_API_DOMAIN/api/v1/ingest/events/batch \\
  -H "X-API-Key: bq_live_your_key" \\
  -H "Content-Type: application/json" \\
  -d '{
    "events": [
      {
        "event_name": "page_view",
        "participant_id": "user_123",
        "properties": {"page": "/products"}
      },
      {
        "event_name": "add_to_cart",
        "participant_id": "user_123",
        "properties": {"product_id": "prod_abc", "quantity": 1}
      },
      {
        "event_name": "purchase_completed",
        "participant_id": "user_123",
        "properties": {"amount": 49.99, "currency": "USD"}
      }
    ]
  }'"""

SYNC_EXAMPLE = """curl -X POST https://YOUR_API_DOMAIN/api/v1/ingest/events/sync \\
  -H "X-API-Key: bq_live_your_key" \\
  -H "Content-Type: application/json" \\
  -d '{
    "event_name": "level_completed",
    "participant_id": "user_123",
    "properties": {
      "level": 5,
      "score": 9200,
      "time_seconds": 120
    }
  }'"""


@pytest.fixture(scope="module")
def live_ingest(redis_server: Server, postgres_server: Server) -> Any:
    with granian_ingest(redis_server.url, postgres_server.url) as base:
        yield base


def run_example(example: str, base: str, key: str) -> tuple[int, dict[str, Any]]:
    command = example.replace("https://YOUR_API_DOMAIN", base).replace("bq_live_your_key", key)
    command = command.replace("curl ", "curl -sS -w '\\n%{http_code}' --max-time 10 ", 1)
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True)
    body, status = done.stdout.rsplit("\n", 1)
    return int(status), json.loads(body)


def test_async_example_is_accepted_with_a_stream_message_id(
    live_ingest: str, tenant: Tenant
) -> None:
    status, body = run_example(ASYNC_EXAMPLE, live_ingest, tenant.live_key)
    assert status == 202
    assert body["accepted"] is True
    assert STREAM_ID.match(body["message_id"])
    assert body["event_id"].startswith("evt_")


def test_batch_example_accepts_three_events_in_order(live_ingest: str, tenant: Tenant) -> None:
    status, body = run_example(BATCH_EXAMPLE, live_ingest, tenant.live_key)
    assert status == 202
    assert body["accepted"] == 3
    assert body["rejected"] == 0
    assert len(body["message_ids"]) == 3
    assert all(STREAM_ID.match(m) for m in body["message_ids"])
    # Stream ids grow, so the order of message_ids is the order of the events.
    as_tuples = [tuple(map(int, m.split("-"))) for m in body["message_ids"]]
    assert as_tuples == sorted(as_tuples)
    assert [r["status"] for r in body["results"]] == ["accepted"] * 3


def test_sync_example_returns_event_and_fact_ids(live_ingest: str, tenant: Tenant, db: Any) -> None:
    status, body = run_example(SYNC_EXAMPLE, live_ingest, tenant.live_key)
    assert status == 200
    assert body["fact_type"] == "custom.level_completed"
    assert body["event_id"].startswith("evt_")
    assert body["fact_id"].startswith("fact_")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", body["processed_at"])
    row = db.execute(
        "SELECT fact_type, properties FROM facts WHERE project_id = %s AND fact_id = %s",
        (tenant.project_id, body["fact_id"]),
    ).fetchone()
    assert row == ("custom.level_completed", {"level": 5, "score": 9200, "time_seconds": 120})
