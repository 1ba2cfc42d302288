"""While a slot of the Redis Cluster has no primary (its primary and replica both gone),
ingest answers 503 with Retry-After within REDIS_TIMEOUT_MS: never a 500, never a hang;
and once a node serves the slot again, events are accepted again."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from bricqs_devstack.cluster import RedisClusterServers, start_redis_cluster
from bricqs_devstack.servers import Server, start_redis
from tests.conftest import make_tenant
from tests.ingest.helpers import granian_ingest
from tests.processes import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REDIS_TIMEOUT_MS = 1000
# An answer comes within the Redis bound; the rest is the request's own work on loopback.
ANSWER_BOUND_S = REDIS_TIMEOUT_MS / 1000 + 2.0


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    yield servers
    servers.stop()


def test_ingest_answers_503_in_time_while_a_slot_has_no_primary(
    cluster: RedisClusterServers, postgres_server: Server
) -> None:
    tenant = make_tenant(postgres_server.url, "no primary")
    env = {"REDIS_CLUSTER": "true", "STREAM_SHARDS": "8", "REDIS_TIMEOUT_MS": "1000"}
    seed = cluster.nodes[0]
    with (
        granian_ingest(cluster.url, postgres_server.url, **env) as base,
        httpx.Client(base_url=base, headers={"X-API-Key": tenant.live_key}, timeout=10) as http,
    ):

        def send(n: int) -> tuple[int, float, str]:
            body = {"event_name": "login", "participant_id": f"user_{n}"}
            started = time.monotonic()
            response = http.post("/api/v1/ingest/events", json=body)
            return (
                response.status_code,
                time.monotonic() - started,
                response.headers.get("Retry-After", ""),
            )

        assert {send(n)[0] for n in range(16)} == {202}
        # The primary and the replica of one set of slots go: no node serves them.
        victim = next(p for p in cluster.primaries() if p.port != seed.port)
        replica = next(n for n in cluster.topology() if n.primary_id == victim.node_id)
        gone = [s for s in cluster.nodes if s.port in (victim.port, replica.port)]
        for server in gone:
            server.stop()
        answers = [send(n) for n in range(40)]
        statuses = Counter(status for status, _, _ in answers)
        assert set(statuses) <= {202, 503}, statuses
        assert statuses[503] > 0, statuses
        assert max(seconds for _, seconds, _ in answers) < ANSWER_BOUND_S
        assert all(retry for status, _, retry in answers if status == 503)

        # The nodes come back with their data and cluster config: accepted again.
        for server in gone:
            restarted = start_redis(server.data_dir, server.port, extra_args=_cluster_args(server))
            cluster.nodes[cluster.nodes.index(server)] = restarted

        def accepted_again() -> bool:
            return send(1)[0] == 202 and send(2)[0] == 202

        wait_until(accepted_again, 60, "ingest to accept events again")


def _cluster_args(server: Server) -> list[str]:
    """The arguments a node was started with, to restart it as the same cluster member."""
    args = server.process.args
    assert isinstance(args, list)
    return [str(a) for a in args[args.index("--cluster-enabled") :]]
