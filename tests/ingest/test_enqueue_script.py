"""The enqueue scripts are loaded once and run by digest (EVALSHA); when Redis has lost
them (restart, SCRIPT FLUSH) they are loaded again and the request still succeeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from litestar.testing import TestClient

from bricqs.stream import stream_key
from bricqs_devstack.servers import restart
from tests.conftest import Tenant, make_tenant, private_servers
from tests.ingest.helpers import BATCH, EVENTS, granian_ingest


def script_calls(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {
        name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha")
    }


def keyed_batch(prefix: str, n: int = 5) -> dict[str, Any]:
    return {
        "events": [
            {"event_name": "e", "participant_id": f"p{i}", "idempotency_key": f"{prefix}-{i}"}
            for i in range(n)
        ]
    }


def test_keyed_events_run_the_script_by_digest_not_by_source(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    ingest.post(EVENTS, headers=headers, json={"event_name": "e", "participant_id": "p"})
    redis_client.config_resetstat()
    single = {"event_name": "e", "participant_id": "p", "idempotency_key": "one"}
    assert ingest.post(EVENTS, headers=headers, json=single).status_code == 202
    assert ingest.post(BATCH, headers=headers, json=keyed_batch("b")).status_code == 202
    calls = script_calls(redis_client)
    assert calls["eval"] == 0
    assert calls["evalsha"] >= 2


def test_a_flushed_script_cache_is_refilled_and_the_events_are_queued_once(
    ingest: TestClient[Any], tenant: Tenant, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    assert ingest.post(BATCH, headers=headers, json=keyed_batch("a")).status_code == 202
    redis_client.script_flush()
    answer = ingest.post(BATCH, headers=headers, json=keyed_batch("b"))
    assert answer.status_code == 202
    assert [r["status"] for r in answer.json()["results"]] == ["accepted"] * 5
    assert redis_client.xlen(stream_key(0)) == 10
    redis_client.script_flush()
    again = ingest.post(BATCH, headers=headers, json=keyed_batch("b"))
    assert [r["status"] for r in again.json()["results"]] == ["duplicate"] * 5
    assert redis_client.xlen(stream_key(0)) == 10


@pytest.mark.slow
def test_keyed_events_are_queued_after_a_redis_restart(tmp_path: Path) -> None:
    with private_servers(tmp_path) as servers:
        tenant = make_tenant(servers["postgres"].url)
        with granian_ingest(servers["redis"].url, servers["postgres"].url) as base:
            headers = {"X-API-Key": tenant.live_key}
            first = httpx.post(base + BATCH, headers=headers, json=keyed_batch("a"), timeout=10)
            assert first.status_code == 202
            servers["redis"] = restart(servers["redis"])  # the script cache is empty again
            answer = None
            for _ in range(20):  # the first request after the restart may find the socket gone
                answer = httpx.post(
                    base + BATCH, headers=headers, json=keyed_batch("b"), timeout=10
                )
                if answer.status_code != 503:
                    break
            assert answer is not None and answer.status_code == 202
            assert answer.json()["accepted"] == 5
