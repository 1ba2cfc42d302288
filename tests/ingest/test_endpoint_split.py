"""INGEST_ENDPOINTS narrows a process to the async endpoints or to sync alone, so sync
events (which run the mechanics on the worker's loop) can be served by processes of their
own: `make run` adds one on SYNC_PORT, Kubernetes a Deployment the ingress routes to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from bricqs.stream import stream_key
from bricqs_devstack.run import SYNC_PORT, service_commands
from bricqs_devstack.servers import Server
from bricqs_ingest.app import create_app
from tests.conftest import Tenant
from tests.ingest.conftest import ingest_settings
from tests.ingest.helpers import BATCH, EVENTS, SYNC

EVENT = {"event_name": "level_completed", "participant_id": "p1", "properties": {"level": 1}}


@pytest.fixture
def serving(redis_server: Server, postgres_server: Server) -> Iterator[Any]:
    clients: list[TestClient[Any]] = []

    def start(endpoints: str) -> TestClient[Any]:
        settings = ingest_settings(
            redis_server.url, postgres_server.url, ingest_endpoints=endpoints
        )
        client = TestClient(create_app(settings), base_url="http://127.0.0.1")
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def test_an_async_ingest_serves_single_and_batch_but_not_sync(
    serving: Any, tenant: Tenant, redis_client: Any
) -> None:
    ingest = serving("async")
    headers = {"X-API-Key": tenant.live_key}
    assert ingest.post(EVENTS, headers=headers, json=EVENT).status_code == 202
    assert ingest.post(BATCH, headers=headers, json={"events": [EVENT]}).status_code == 202
    assert ingest.post(SYNC, headers=headers, json=EVENT).status_code == 404


def test_a_sync_ingest_serves_sync_alone_and_not_even_the_fast_path(
    serving: Any, tenant: Tenant, redis_client: Any
) -> None:
    ingest = serving("sync")
    headers = {"X-API-Key": tenant.live_key}
    answer = ingest.post(SYNC, headers=headers, json=EVENT)
    assert answer.status_code == 200
    assert answer.json()["fact_type"] == "custom.level_completed"
    # The plain case of a single event is what the fast path answers elsewhere.
    assert ingest.post(EVENTS, headers=headers, json=EVENT).status_code == 404
    assert ingest.post(BATCH, headers=headers, json={"events": [EVENT]}).status_code == 404
    assert redis_client.xlen(stream_key(0)) == 0


def test_make_run_serves_sync_events_on_a_port_and_workers_of_their_own() -> None:
    services = {name: (command, env) for name, command, env in service_commands(Path("/b"))}
    command, env = services["ingest-sync"]
    assert env == {"INGEST_ENDPOINTS": "sync"}
    assert command[command.index("--port") + 1] == str(SYNC_PORT)
    ingest_command, ingest_env = services["ingest"]
    assert ingest_command[ingest_command.index("--port") + 1] != str(SYNC_PORT)
    assert "INGEST_ENDPOINTS" not in ingest_env  # the README's one address serves all
