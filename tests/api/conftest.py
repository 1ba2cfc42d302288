"""Api and ingest clients in-process, against the real servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from bricqs.devstack import Server
from bricqs_api.app import create_app as create_api
from bricqs_api.settings import ApiSettings
from tests.conftest import Tenant
from tests.ingest.conftest import ingest_settings


@pytest.fixture
def api(redis_server: Server, postgres_server: Server) -> Iterator[TestClient[Any]]:
    settings = ApiSettings(
        redis_url=redis_server.url,
        database_url=postgres_server.url,
        log_level="WARNING",
        rules_refresh_seconds=0.01,
    )
    with TestClient(create_api(settings), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def sync_ingest(
    redis_server: Server, postgres_server: Server, redis_client: Any
) -> Iterator[TestClient[Any]]:
    from bricqs_ingest.app import create_app as create_ingest

    settings = ingest_settings(redis_server.url, postgres_server.url, rules_refresh_seconds=0.01)
    with TestClient(create_ingest(settings), base_url="http://127.0.0.1") as client:
        yield client


class Story:
    """A tenant's view of both services: define, send, read."""

    def __init__(
        self, api: TestClient[Any], ingest: TestClient[Any], tenant: Tenant, key: str
    ) -> None:
        self.api, self.ingest, self.tenant, self.key = api, ingest, tenant, key

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def define(self, segment: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.api.post(f"/api/v1/gamify/admin/{segment}", headers=self.headers, json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def send(
        self,
        event_name: str,
        participant: str,
        properties: dict[str, Any] | None = None,
        timestamp: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event_name": event_name,
            "participant_id": participant,
            "properties": properties or {},
        }
        if timestamp:
            body["timestamp"] = timestamp
        response = self.ingest.post("/api/v1/ingest/events/sync", headers=self.headers, json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(f"/api/v1/gamify{path}", headers=self.headers, params=params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def story(api: TestClient[Any], sync_ingest: TestClient[Any], tenant: Tenant) -> Story:
    return Story(api, sync_ingest, tenant, tenant.live_key)
