"""X-API-Key authentication and live/test isolation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from bricqs.storage import tenants
from bricqs_devstack.servers import Server
from bricqs_ingest.app import create_app
from tests.conftest import Tenant
from tests.ingest.conftest import ingest_settings
from tests.ingest.helpers import BATCH, EVENTS, SYNC

EVENT = {"event_name": "login", "participant_id": "user_1"}


@pytest.mark.parametrize("path", [EVENTS, BATCH, SYNC])
def test_missing_key_is_401_missing_api_key(ingest: TestClient[Any], path: str) -> None:
    response = ingest.post(path, json=EVENT)
    assert response.status_code == 401
    assert response.json()["code"] == "missing_api_key"


@pytest.mark.parametrize(
    "key",
    [
        "nonsense",
        "bq_prod_" + "a" * 40,  # unknown environment
        "bq_live_short",  # too short
        "bq_live_" + "a" * 39 + "!",  # not base62
        "bq_live_" + "a" * 40,  # well-formed but unknown
    ],
)
@pytest.mark.parametrize("path", [EVENTS, BATCH, SYNC])
def test_malformed_or_unknown_key_is_401_invalid_api_key(
    ingest: TestClient[Any], path: str, key: str
) -> None:
    response = ingest.post(path, headers={"X-API-Key": key}, json=EVENT)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"


def test_revoked_key_is_refused_once_the_cache_ttl_passes(
    redis_server: Server, postgres_server: Server, tenant: Tenant, redis_client: Any
) -> None:
    settings = ingest_settings(redis_server.url, postgres_server.url, auth_cache_ttl_seconds=0.2)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        assert (
            client.post(EVENTS, headers={"X-API-Key": tenant.live_key}, json=EVENT).status_code
            == 202
        )

        async def revoke() -> None:
            async with await psycopg.AsyncConnection.connect(
                postgres_server.url, autocommit=True
            ) as conn:
                assert await tenants.revoke_key(conn, tenant.live_key_id)

        asyncio.run(revoke())
        time.sleep(0.3)  # the documented revocation delay is the cache TTL
        response = client.post(EVENTS, headers={"X-API-Key": tenant.live_key}, json=EVENT)
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_api_key"
        # The project's test key is unaffected.
        assert (
            client.post(EVENTS, headers={"X-API-Key": tenant.test_key}, json=EVENT).status_code
            == 202
        )


def test_test_key_writes_only_test_data(ingest: TestClient[Any], tenant: Tenant, db: Any) -> None:
    ingest.post(SYNC, headers={"X-API-Key": tenant.test_key}, json=EVENT)
    ingest.post(SYNC, headers={"X-API-Key": tenant.test_key}, json=EVENT)
    ingest.post(SYNC, headers={"X-API-Key": tenant.live_key}, json=EVENT)
    rows = db.execute(
        "SELECT environment, count(*) FROM events WHERE project_id = %s GROUP BY 1 ORDER BY 1",
        (tenant.project_id,),
    ).fetchall()
    assert rows == [("live", 1), ("test", 2)]
    participants = db.execute(
        "SELECT environment, event_count FROM participants WHERE project_id = %s ORDER BY 1",
        (tenant.project_id,),
    ).fetchall()
    assert participants == [("live", 1), ("test", 2)]


def test_idempotency_keys_of_live_and_test_never_meet(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    live = ingest.post(
        SYNC, headers={"X-API-Key": tenant.live_key, "Idempotency-Key": "k"}, json=EVENT
    )
    test = ingest.post(
        SYNC,
        headers={"X-API-Key": tenant.test_key, "Idempotency-Key": "k"},
        json={**EVENT, "properties": {"other": True}},
    )
    assert live.status_code == test.status_code == 200
    assert test.json()["duplicate"] is False
    assert live.json()["event_id"] != test.json()["event_id"]


def test_keys_of_two_projects_never_meet(
    ingest: TestClient[Any], tenant: Tenant, postgres_server: Server, db: Any
) -> None:
    from tests.conftest import make_tenant

    other = make_tenant(postgres_server.url, "other")
    a = ingest.post(
        SYNC, headers={"X-API-Key": tenant.live_key, "Idempotency-Key": "same"}, json=EVENT
    )
    b = ingest.post(
        SYNC,
        headers={"X-API-Key": other.live_key, "Idempotency-Key": "same"},
        json={**EVENT, "participant_id": "x"},
    )
    assert (a.json()["duplicate"], b.json()["duplicate"]) == (False, False)
    owners = db.execute(
        "SELECT project_id FROM events WHERE event_id = ANY(%s) ORDER BY project_id",
        ([a.json()["event_id"], b.json()["event_id"]],),
    ).fetchall()
    assert sorted(r[0] for r in owners) == sorted([tenant.project_id, other.project_id])
