"""The pipeline on a real Redis Cluster (3 primaries, 3 replicas) with 8 shards and two
processors: events in over HTTP on all three endpoints, a primary failed over in the
middle, and every event answered 2xx stored exactly once, no 500, no dead letter.

`CI=true` runs a short load; `SCALE_SECONDS` sets another length.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bricqs.admin import main as admin_main
from bricqs.redis_connect import connect_redis
from bricqs.stream import DeadLetter, dead_letter_key, stream_key
from bricqs_devstack.cluster import RedisClusterServers, start_redis_cluster
from bricqs_devstack.servers import Server
from tests.conftest import make_tenant
from tests.faults.harness import read_rows
from tests.faults.traffic import STOP_BOUND, Client, Traffic
from tests.ingest.helpers import granian_ingest
from tests.processes import ProcessorFactory, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SHARDS = 8
LOAD_SECONDS = float(os.environ.get("SCALE_SECONDS") or (6 if os.environ.get("CI") else 20))
CLIENTS = 3
CLUSTER_ENV = {"REDIS_CLUSTER": "true", "STREAM_SHARDS": str(SHARDS)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    yield servers
    servers.stop()


def dead_letters(url: str) -> int:
    """Entries in every shard's dead-letter stream, read through the cluster client."""

    async def count() -> int:
        client = connect_redis(url, cluster=True, timeout_s=5)
        try:
            return sum([int(await client.xlen(dead_letter_key(s))) for s in range(SHARDS)])
        finally:
            await client.aclose()

    return asyncio.run(count())


def test_events_answered_2xx_through_a_primary_failover_are_stored_exactly_once(
    cluster: RedisClusterServers, postgres_server: Server, tmp_path: Path
) -> None:
    tenant = make_tenant(postgres_server.url, "redis cluster")
    processors = ProcessorFactory(cluster.url, postgres_server.url, tmp_path)
    traffic = Traffic()
    try:
        for _ in range(2):
            processors.start(**CLUSTER_ENV)
        with granian_ingest(
            cluster.url, postgres_server.url, REDIS_TIMEOUT_MS="2000", **CLUSTER_ENV
        ) as base:
            clients = [Client(n, base, tenant.live_key, traffic) for n in range(CLIENTS)]
            for client in clients:
                client.start()
            time.sleep(LOAD_SECONDS / 2)
            failed_over_at = traffic.now()
            cluster.failover(cluster.primaries()[0].port)
            time.sleep(LOAD_SECONDS / 2)
            for client in clients:
                client.halt.set()
            for client in clients:
                client.join(STOP_BOUND)
                assert client.failure is None, client.failure
        accepted = traffic.accepted()

        def all_stored() -> bool:
            rows = read_rows(postgres_server.url, tenant.project_id)
            return all(rows.get(s.seq) for s in accepted)

        wait_until(all_stored, 60, "every accepted event to be stored", processors.logs)
        rows = read_rows(postgres_server.url, tenant.project_id)
    finally:
        processors.stop_all()

    assert not [label for label in traffic.statuses if label.startswith("500")], traffic.statuses
    assert traffic.errors == []
    assert {s.endpoint for s in accepted} == {"single", "batch", "sync"}
    assert any(s.answered_at > failed_over_at for s in accepted), "nothing after the failover"
    duplicated = [s.seq for s in traffic.sent if len(rows.get(s.seq, [])) > 1]
    assert duplicated == []
    assert all(rows[s.seq][0][0] == s.event_id for s in accepted)
    assert dead_letters(cluster.url) == 0


def test_bricqs_admin_lists_and_replays_dead_letters_on_the_cluster(
    cluster: RedisClusterServers, capsys: pytest.CaptureFixture[str]
) -> None:
    async def on_cluster(*commands: tuple[str, ...]) -> None:
        client = connect_redis(cluster.url, cluster=True, timeout_s=5)
        try:
            for command in commands:
                await client.execute_command(*command)
        finally:
            await client.aclose()

    letters = [(s, DeadLetter(b"{}", "rejected: test", stream_key(s), "1-1", 1)) for s in (3, 6)]
    asyncio.run(
        on_cluster(
            *(
                (
                    "XADD",
                    dead_letter_key(s),
                    "*",
                    *(x for kv in letter.fields().items() for x in kv),
                )
                for s, letter in letters
            )
        )
    )
    common = ["--json", "--redis-url", cluster.url, "--redis-cluster"]
    assert admin_main(["dlq", *common, "--shards", str(SHARDS), "list"]) == 0
    listed = json.loads(capsys.readouterr().out)["entries"]
    assert sorted(e["shard"] for e in listed) == [3, 6]
    assert admin_main(["dlq", *common, "--shards", str(SHARDS), "replay", "--all"]) == 0
    capsys.readouterr()
    assert dead_letters(cluster.url) == 0
    # The replayed entries are not events: gone, so no processor of another test meets them.
    asyncio.run(on_cluster(*(("DEL", stream_key(s)) for s, _ in letters)))
