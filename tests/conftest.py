"""Fixtures: throwaway Redis and PostgreSQL servers for the whole session, fresh tenants
per test, and in-process clients of the services.

Servers come from `bricqs.devstack`, the same code `make run` uses. Set
`BRICQS_TEST_KEEP=1` to leave their data folder behind for a post-mortem.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from bricqs.devstack import Server, start_postgres, start_redis
from bricqs.storage import tenants
from bricqs.storage.migrate import migrate


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


def make_tenant(database_url: str, name: str = "test project") -> Tenant:
    async def create() -> Tenant:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            project = await tenants.create_project(conn, name)
            live, live_plain = await tenants.create_key(conn, project.project_id, "live")
            test, test_plain = await tenants.create_key(conn, project.project_id, "test")
        return Tenant(project.project_id, live_plain, test_plain, live.key_id, test.key_id)

    return asyncio.run(create())


@pytest.fixture
def tenant(postgres_server: Server) -> Tenant:
    return make_tenant(postgres_server.url)


def service_env(redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """Environment for a service subprocess pointed at the test servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    env.update(REDIS_URL=redis_url, DATABASE_URL=database_url, LOG_LEVEL="WARNING", **extra)
    return env
