"""/metrics stays correct with several Granian workers (multiprocess mode)."""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

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


def accepted_by_worker(folder: Path, scratch: Path) -> dict[str, float]:
    """Accepted single events per worker process, read from each one's own files."""
    files: dict[str, list[Path]] = defaultdict(list)
    for file in folder.glob("*.db"):
        files[file.stem.rsplit("_", 1)[1]].append(file)  # `<kind>_<pid>.db`
    counts = {}
    for pid, own in files.items():
        alone = scratch / pid
        alone.mkdir(parents=True, exist_ok=True)
        for file in own:
            shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        text = generate_latest(registry).decode()
        counts[pid] = sample(
            text, "bricqs_ingest_events_total", endpoint="single", outcome="accepted"
        )
    return counts


def test_counts_add_up_across_two_workers_that_both_served(
    redis_server: Server, postgres_server: Server, tenant: Tenant, tmp_path: Path, redis_client: Any
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    with granian_ingest(
        redis_server.url, postgres_server.url, workers=2, PROMETHEUS_MULTIPROC_DIR=str(folder)
    ) as base:
        # New connections each time, spread by the kernel over the two workers: keep
        # sending until both have served some (bounded), then check the totals.
        sent = 0
        while (
            sent < 40
            or sum(1 for n in accepted_by_worker(folder, tmp_path / "s").values() if n) < 2
        ):
            assert sent < 400, (
                f"one worker served everything: {accepted_by_worker(folder, tmp_path / 's')}"
            )
            response = httpx.post(
                base + EVENTS,
                headers={"X-API-Key": tenant.live_key},
                json={"event_name": "e", "participant_id": f"p{sent}"},
            )
            assert response.status_code == 202
            sent += 1
        for _ in range(5):
            httpx.post(base + EVENTS, headers={"X-API-Key": tenant.live_key}, json={})
        per_worker = accepted_by_worker(folder, tmp_path / "final")
        text = httpx.get(base + "/metrics").text
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values())
    assert sum(per_worker.values()) == sent
    assert sample(text, "bricqs_ingest_events_total", endpoint="single", outcome="accepted") == sent
    assert sample(text, "bricqs_ingest_events_total", endpoint="single", outcome="rejected") == 5
    route = "/api/v1/ingest/events"
    assert (
        sample(text, "bricqs_http_request_duration_seconds_count", route=route, status="202")
        == sent
    )
    assert (
        sample(text, "bricqs_http_request_duration_seconds_count", route=route, status="422") == 5
    )
    assert sample(text, "bricqs_ingest_xadd_duration_seconds_count") >= 1
    assert re.search(r"bricqs_http_request_duration_seconds_bucket\{.*le=\"0.05\"", text)
