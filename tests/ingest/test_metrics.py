"""/metrics stays correct with several Granian workers (multiprocess mode)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from bricqs_devstack.servers import Server
from tests.conftest import Tenant
from tests.ingest.helpers import EVENTS, granian_ingest

pytestmark = pytest.mark.slow


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_counts_add_up_across_two_workers(
    redis_server: Server, postgres_server: Server, tenant: Tenant, tmp_path: Path, redis_client: Any
) -> None:
    with granian_ingest(
        redis_server.url, postgres_server.url, workers=2, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)
    ) as base:
        # New connections each time, so both workers get requests.
        for i in range(40):
            response = httpx.post(
                base + EVENTS,
                headers={"X-API-Key": tenant.live_key},
                json={"event_name": "e", "participant_id": f"p{i}"},
            )
            assert response.status_code == 202
        for _ in range(5):
            httpx.post(base + EVENTS, headers={"X-API-Key": tenant.live_key}, json={})
        assert len(list(tmp_path.glob("*.db"))) >= 2  # both workers wrote their own files
        text = httpx.get(base + "/metrics").text
    assert sample(text, "bricqs_ingest_events_total", endpoint="single", outcome="accepted") == 40
    assert sample(text, "bricqs_ingest_events_total", endpoint="single", outcome="rejected") == 5
    route = "/api/v1/ingest/events"
    assert (
        sample(text, "bricqs_http_request_duration_seconds_count", route=route, status="202") == 40
    )
    assert (
        sample(text, "bricqs_http_request_duration_seconds_count", route=route, status="422") == 5
    )
    assert sample(text, "bricqs_ingest_xadd_duration_seconds_count") >= 1
    assert re.search(r"bricqs_http_request_duration_seconds_bucket\{.*le=\"0.05\"", text)
