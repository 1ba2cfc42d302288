"""Redis or PostgreSQL down or frozen: clear 503s with Retry-After, never a hang or a 500,
and recovery when they return. Each test owns its servers, so it may break them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from bricqs_devstack.servers import Server, restart
from bricqs_ingest.app import create_app
from tests.conftest import Tenant, make_tenant, private_servers
from tests.ingest.conftest import ingest_settings
from tests.ingest.helpers import BATCH, EVENTS, SYNC, granian_ingest

pytestmark = pytest.mark.slow
EVENT = {"event_name": "login", "participant_id": "user_1"}
# Generous bound: a hang would hit it; a 503 within the 300 ms Redis timeout never does.
CLIENT_TIMEOUT = 10.0


@pytest.fixture
def own_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    with private_servers(Path(tmp_path_factory.mktemp("outage"))) as servers:
        yield servers


def overloaded_count() -> float:
    return REGISTRY.get_sample_value("bricqs_database_overloaded_total") or 0.0


def post(base: str, path: str, key: str, body: Any) -> httpx.Response:
    return httpx.post(base + path, headers={"X-API-Key": key}, json=body, timeout=CLIENT_TIMEOUT)


def test_redis_stopped_gives_503_then_recovers(own_servers: dict[str, Server]) -> None:
    tenant = make_tenant(own_servers["postgres"].url)
    with granian_ingest(
        own_servers["redis"].url, own_servers["postgres"].url, REDIS_TIMEOUT_MS="300"
    ) as base:
        assert post(base, EVENTS, tenant.live_key, EVENT).status_code == 202
        own_servers["redis"].stop()
        for path, body in ((EVENTS, EVENT), (BATCH, {"events": [EVENT]})):
            response = post(base, path, tenant.live_key, body)
            assert response.status_code == 503
            assert response.json()["code"] == "queue_unavailable"
            assert response.headers["Retry-After"] == "1"
        ready = httpx.get(base + "/health/ready", timeout=CLIENT_TIMEOUT)
        assert ready.status_code == 503
        own_servers["redis"] = restart(own_servers["redis"])
        assert post(base, EVENTS, tenant.live_key, EVENT).status_code == 202
        assert httpx.get(base + "/health/ready", timeout=CLIENT_TIMEOUT).status_code == 200


def test_frozen_redis_gives_503_within_the_timeout_then_recovers(
    own_servers: dict[str, Server],
) -> None:
    tenant = make_tenant(own_servers["postgres"].url)
    with granian_ingest(
        own_servers["redis"].url, own_servers["postgres"].url, REDIS_TIMEOUT_MS="300"
    ) as base:
        assert post(base, EVENTS, tenant.live_key, EVENT).status_code == 202
        own_servers["redis"].pause()
        try:
            response = post(base, EVENTS, tenant.live_key, EVENT)
            assert response.status_code == 503
            assert response.json()["code"] == "queue_unavailable"
        finally:
            own_servers["redis"].resume()
        assert post(base, EVENTS, tenant.live_key, EVENT).status_code == 202


def test_postgres_down_keeps_async_ingest_up_and_sync_says_503(
    own_servers: dict[str, Server],
) -> None:
    tenant: Tenant = make_tenant(own_servers["postgres"].url)
    with granian_ingest(
        own_servers["redis"].url, own_servers["postgres"].url, DATABASE_TIMEOUT_MS="1000"
    ) as base:
        assert post(base, SYNC, tenant.live_key, EVENT).status_code == 200  # warms the key cache
        own_servers["postgres"].stop()
        # The async path never needs PostgreSQL for a cached key.
        assert post(base, EVENTS, tenant.live_key, EVENT).status_code == 202
        # Nor for an old keyed event, whose PostgreSQL check is skipped when it cannot answer.
        late = {**EVENT, "timestamp": "2020-01-01T00:00:00Z", "idempotency_key": "late"}
        assert post(base, EVENTS, tenant.live_key, late).status_code == 202
        response = post(base, SYNC, tenant.live_key, EVENT)
        assert response.status_code == 503
        assert response.json()["code"] == "database_unavailable"
        assert response.headers["Retry-After"] == "1"
        # A key never seen cannot be checked: 503, not a wrong 401.
        unknown = post(base, EVENTS, "bq_live_" + "z" * 40, EVENT)
        assert (unknown.status_code, unknown.json()["code"]) == (503, "auth_unavailable")
        own_servers["postgres"] = restart(own_servers["postgres"])
        recovered = None
        for _ in range(50):  # the pool reconnects in the background
            recovered = post(base, SYNC, tenant.live_key, EVENT)
            if recovered.status_code == 200:
                break
        assert recovered is not None and recovered.status_code == 200


def test_a_statement_timeout_is_503_database_overloaded_with_a_longer_retry(
    redis_server: Server, postgres_server: Server, tenant: Tenant, redis_client: Any, db: Any
) -> None:
    before = overloaded_count()
    settings = ingest_settings(redis_server.url, postgres_server.url, database_timeout_ms=300)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as ingest:
        headers = {"X-API-Key": tenant.live_key}
        assert ingest.post(SYNC, headers=headers, json=EVENT).status_code == 200  # key cached
        # Another transaction holds the events table: the insert waits past the timeout.
        with db.transaction():
            db.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            response = ingest.post(SYNC, headers=headers, json=EVENT)
        assert response.status_code == 503
        assert response.json()["code"] == "database_overloaded"
        assert int(response.headers["Retry-After"]) >= 5
    assert overloaded_count() == before + 1
