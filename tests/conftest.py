"""Fixtures: throwaway Redis and PostgreSQL servers for the whole session, fresh tenants
per test, and in-process clients of the services.

Servers come from `bricqs_devstack.servers`, the same code `make run` uses. Set
`BRICQS_TEST_KEEP=1` to leave their data folder behind for a post-mortem.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from litestar.testing import TestClient

from bricqs.storage import tenants
from bricqs.storage.migrate import available_migrations, migrate
from bricqs.storage.tenants import SCOPES
from bricqs_devstack.servers import Server, start_postgres, start_redis

# Signs participant tokens in the `api` and `sync_ingest` apps.
PARTICIPANT_TOKEN_SECRET = "test-participant-token-secret"


@pytest.fixture(scope="session")
def data_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="bricqs-test-"))
    yield root
    if not os.environ.get("BRICQS_TEST_KEEP"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(data_root: Path) -> Iterator[Server]:
    server = start_redis(data_root / "redis")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(data_root: Path) -> Iterator[Server]:
    server = start_postgres(data_root / "postgres", fsync=False)
    migrate(server.url)
    yield server
    server.stop()


@contextmanager
def private_servers(root: Path) -> Iterator[dict[str, Server]]:
    """A Redis (AOF, everysec) and a migrated PostgreSQL of the caller's own, for tests
    that stop, freeze or restart them; resumed if frozen, then stopped."""
    servers = {
        "redis": start_redis(root / "redis"),
        # Crash-safe commits: whatever else happens to this PostgreSQL's processes, an
        # acknowledged commit survives (what these tests check), as in production.
        "postgres": start_postgres(root / "pg", fsync=False, crash_safe=True),
    }
    try:
        migrate(servers["postgres"].url)
        yield servers
    finally:
        for server in servers.values():
            server.resume()
            server.stop()


@pytest.fixture
def redis_client(redis_server: Server) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def db(postgres_server: Server) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        yield conn


@dataclass(frozen=True)
class Tenant:
    """A fresh project with one live and one test key."""

    project_id: str
    live_key: str
    test_key: str
    live_key_id: str
    test_key_id: str


@contextmanager
def migrated_before(root: Path, version: str) -> Iterator[Server]:
    """A PostgreSQL of its own under `root` with the migrations before `version` applied:
    the database an upgrade to `version` meets (a migration's test then runs `migrate`)."""
    before = root / "before"
    before.mkdir()
    for migration in available_migrations():
        if migration.version < version:
            (before / migration.filename).write_text(migration.sql)
    server = start_postgres(root / "pg", fsync=False)
    try:
        migrate(server.url, before)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root / "pg", ignore_errors=True)


def make_tenant(database_url: str, name: str = "test project") -> Tenant:
    async def create() -> Tenant:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            project = await tenants.create_project(conn, name)
            live, live_plain = await tenants.create_key(
                conn, project.project_id, "live", scopes=SCOPES
            )
            test, test_plain = await tenants.create_key(
                conn, project.project_id, "test", scopes=SCOPES
            )
        return Tenant(project.project_id, live_plain, test_plain, live.key_id, test.key_id)

    return asyncio.run(create())


@pytest.fixture
def tenant(postgres_server: Server) -> Tenant:
    return make_tenant(postgres_server.url)


def service_env(redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """Environment for a service subprocess pointed at the test servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    env.update({"REDIS_URL": redis_url, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------
# Stories: define mechanics through the api, send events through the sync endpoint, read.


@contextmanager
def api_client(redis_url: str, database_url: str, **overrides: Any) -> Iterator[TestClient[Any]]:
    """The api in process, against the given servers; `overrides` are ApiSettings fields."""
    from bricqs_api.app import create_app as create_api
    from bricqs_api.settings import ApiSettings

    values: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": database_url,
        "log_level": "WARNING",
        "rules_refresh_seconds": 0,
        "participant_token_secret": PARTICIPANT_TOKEN_SECRET,
    }
    settings = ApiSettings(**(values | overrides))
    with TestClient(create_api(settings), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def api(redis_server: Server, postgres_server: Server) -> Iterator[TestClient[Any]]:
    with api_client(redis_server.url, postgres_server.url) as client:
        yield client


@pytest.fixture
def sync_ingest(
    redis_server: Server, postgres_server: Server, redis_client: Any
) -> Iterator[TestClient[Any]]:
    from bricqs_ingest.app import create_app as create_ingest
    from tests.ingest.conftest import ingest_settings

    settings = ingest_settings(
        redis_server.url,
        postgres_server.url,
        rules_refresh_seconds=0,
        participant_token_secret=PARTICIPANT_TOKEN_SECRET,
    )
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
