"""Ingest clients: the app in-process (Litestar's TestClient, real Redis and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from bricqs_devstack.servers import Server
from bricqs_ingest.app import create_app
from bricqs_ingest.settings import IngestSettings


def ingest_settings(redis_url: str, database_url: str, **overrides: Any) -> IngestSettings:
    return IngestSettings(
        redis_url=redis_url, database_url=database_url, log_level="WARNING", **overrides
    )


@pytest.fixture
def ingest(
    redis_server: Server, postgres_server: Server, redis_client: Any
) -> Iterator[TestClient[Any]]:
    app = create_app(ingest_settings(redis_server.url, postgres_server.url))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client
