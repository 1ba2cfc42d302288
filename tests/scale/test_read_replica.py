"""The api's reads from a streaming standby (`DATABASE_READ_URL`; issue 12, part 5).

A real standby of the session's PostgreSQL (`pg_basebackup -R`, on loopback). Its replay
is paused to make the lag visible and deterministic: while paused, the api with the
standby answers participant state, the catalog and facts as of the pause,
while writes (and reading them back) go to the primary; once replay resumes and the
standby caught up (waited on its replay LSN, bounded), it answers what the primary does.
A standby that does not answer costs those reads (503), not the writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from bricqs_devstack.pg_extras import start_standby, wait_for_replay
from bricqs_devstack.servers import Server, free_port
from tests.conftest import Story, Tenant, api_client

pytestmark = pytest.mark.timeout(120)

# Every read the standby answers, as paths under /api/v1. Leaderboards are not among them:
# they are read from their Redis mirror, which the writers keep (tests/leaderboards).
READS = [
    "/gamify/participants/alice/state",
    "/gamify/participants/alice/points",
    "/gamify/participants/alice/points/transactions",
    "/gamify/participants/alice/facts",
    "/gamify/participants/alice/badges",
    "/events/catalog",
]
CATCH_UP_SECONDS = 30


@pytest.fixture(scope="module")
def standby(data_root: Path, postgres_server: Server) -> Iterator[Server]:
    server = start_standby(data_root / "standby", postgres_server)
    yield server
    server.stop()


@pytest.fixture
def replica_api(
    redis_server: Server, postgres_server: Server, standby: Server
) -> Iterator[TestClient[Any]]:
    with api_client(redis_server.url, postgres_server.url, database_read_url=standby.url) as api:
        yield api


class Replay:
    """Pauses and resumes the standby's replay (received WAL waits, unapplied)."""

    def __init__(self, standby: Server) -> None:
        self.conn = psycopg.connect(standby.url, autocommit=True)

    def pause(self) -> None:
        self.conn.execute("SELECT pg_wal_replay_pause()")

    def resume(self) -> None:
        self.conn.execute("SELECT pg_wal_replay_resume()")


@pytest.fixture
def replay(standby: Server) -> Iterator[Replay]:
    control = Replay(standby)
    yield control
    control.resume()  # the next test finds it replaying
    control.conn.close()


def answers(api: TestClient[Any], key: str) -> dict[str, Any]:
    """Each read's status and body."""
    found = {}
    for path in READS:
        response = api.get(f"/api/v1{path}", headers={"X-API-Key": key})
        found[path] = (response.status_code, response.json())
    return found


def points(api: TestClient[Any], key: str, participant: str) -> int:
    response = api.get(
        f"/api/v1/gamify/participants/{participant}/points", headers={"X-API-Key": key}
    )
    assert response.status_code == 200, response.text
    return int(response.json()["balance"])


def test_the_api_reads_from_the_standby_and_agrees_once_it_caught_up(
    story: Story,
    replica_api: TestClient[Any],
    replay: Replay,
    postgres_server: Server,
    standby: Server,
) -> None:
    story.define(
        "points-rules",
        {
            "code": "buy",
            "name": "Buy",
            "trigger": {"fact_type": "custom.buy"},
            "amount": {"fixed": 5},
        },
    )
    story.define(
        "badges",
        {
            "code": "buyer",
            "name": "Buyer",
            "criteria": [{"criterion": {"fact_type": "custom.buy"}, "threshold": 2}],
        },
    )
    story.send("buy", "alice")
    wait_for_replay(postgres_server.url, standby.url, CATCH_UP_SECONDS)
    key = story.key
    assert answers(replica_api, key) == answers(story.api, key)
    assert points(replica_api, key, "alice") == 5

    replay.pause()
    story.send("buy", "alice")
    story.send("buy", "bob")
    # The primary has the new events; the standby (paused) does not, and the api's reads
    # show it: they come from the standby.
    assert points(story.api, key, "alice") == 10
    assert points(replica_api, key, "alice") == 5
    stale = answers(replica_api, key)
    assert stale != answers(story.api, key)
    assert stale["/gamify/participants/alice/badges"][1]["earned"] == []

    replay.resume()
    waited = wait_for_replay(postgres_server.url, standby.url, CATCH_UP_SECONDS)
    assert waited < CATCH_UP_SECONDS
    assert answers(replica_api, key) == answers(story.api, key)
    assert points(replica_api, key, "alice") == 10


def test_writes_and_reading_them_back_stay_on_the_primary(
    replica_api: TestClient[Any], replay: Replay, tenant: Tenant
) -> None:
    replay.pause()  # nothing written now reaches the standby
    headers = {"X-API-Key": tenant.live_key}
    rule = {
        "code": "ryw",
        "name": "Ryw",
        "trigger": {"fact_type": "custom.x"},
        "amount": {"fixed": 1},
    }
    created = replica_api.post("/api/v1/gamify/admin/points-rules", headers=headers, json=rule)
    assert created.status_code == 201, created.text
    read_back = replica_api.get("/api/v1/gamify/admin/points-rules/ryw", headers=headers)
    assert read_back.status_code == 200, read_back.text
    updated = replica_api.patch(
        "/api/v1/gamify/participants/carol/", headers=headers, json={"timezone": "Europe/Paris"}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["attributes"] == {"timezone": "Europe/Paris"}


def test_reads_answer_503_while_the_standby_is_down_and_writes_go_on(
    redis_server: Server, postgres_server: Server, tenant: Tenant
) -> None:
    nothing_there = f"postgresql://bricqs@127.0.0.1:{free_port()}/bricqs"
    headers = {"X-API-Key": tenant.live_key}
    with api_client(
        redis_server.url,
        postgres_server.url,
        database_read_url=nothing_there,
        database_timeout_ms=1000,
    ) as api:
        state = api.get("/api/v1/gamify/participants/dave/state", headers=headers)
        assert state.status_code == 503, state.text
        assert state.json()["code"] == "database_unavailable"
        rule = {
            "code": "up",
            "name": "Up",
            "trigger": {"fact_type": "custom.y"},
            "amount": {"fixed": 1},
        }
        created = api.post("/api/v1/gamify/admin/points-rules", headers=headers, json=rule)
        assert created.status_code == 201, created.text
