"""A throwaway Redis Cluster on loopback: primaries and their replicas, for tests and the
bench.

Each node is a `redis-server --cluster-enabled yes` started like `servers.start_redis`
(AOF, bound to 127.0.0.1), with its cluster bus on a port of its own; `redis-cli
--cluster create … --cluster-replicas 1 --cluster-yes` then spreads the 16,384 slots over
the primaries and gives each a replica. The cluster's first node is its seed URL, as a
service's `REDIS_URL` names one node of a real cluster.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bricqs_devstack.servers import DevStackError, Server, free_port, start_redis

# How long a node of a fresh cluster may take to learn every slot's owner, and a replica
# to be promoted by a manual failover (both are gossip rounds of a few hundred ms).
SETTLE_SECONDS = 30.0


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES: a node's id, port, role and (for a replica) its primary."""

    node_id: str
    port: int
    primary: bool
    primary_id: str
    """The id of the primary a replica follows; empty for a primary."""
    failed: bool


@dataclass
class RedisClusterServers:
    """The nodes of a started cluster; `url` is its seed node."""

    nodes: list[Server]

    @property
    def url(self) -> str:
        """A seed node's URL, as `REDIS_URL` gives it with `REDIS_CLUSTER=true`."""
        return self.nodes[0].url

    def cli(self, port: int, *args: str) -> str:
        """Run one redis-cli command against the node on `port`; its output."""
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise DevStackError(f"redis-cli {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def topology(self, port: int | None = None) -> list[ClusterNode]:
        """The cluster as the node on `port` (the seed by default) sees it."""
        found = []
        for line in self.cli(port or self.nodes[0].port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            flags = fields[2].split(",")
            found.append(
                ClusterNode(
                    node_id=fields[0],
                    port=int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                    primary="master" in flags,
                    primary_id="" if fields[3] == "-" else fields[3],
                    failed="fail" in flags or "fail?" in flags,
                )
            )
        return found

    def primaries(self) -> list[ClusterNode]:
        """The primaries now, by port."""
        return sorted((n for n in self.topology() if n.primary), key=lambda n: n.port)

    def failover(self, primary_port: int) -> int:
        """Promote a replica of the primary on `primary_port` with `CLUSTER FAILOVER` (the
        coordinated kind: the primary stops taking writes until its replica caught up);
        wait until every node sees the roles swapped; return the new primary's port."""
        nodes = self.topology()
        old = next(n for n in nodes if n.port == primary_port and n.primary)
        replica = next(n for n in nodes if n.primary_id == old.node_id)
        self.cli(replica.port, "CLUSTER", "FAILOVER")
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            views = [{n.node_id: n.primary for n in self.topology(s.port)} for s in self.nodes]
            if all(view[replica.node_id] and not view[old.node_id] for view in views):
                return replica.port
            time.sleep(0.1)
        raise DevStackError(f"replica {replica.port} was not promoted in {SETTLE_SECONDS} s")

    def wait_healthy(self, replicas: int) -> None:
        """Wait until every node reports the cluster ok (every slot served) and sees
        `replicas` replicas (gossip spreads the roles after `--cluster create`)."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            if all(
                "cluster_state:ok" in self.cli(s.port, "CLUSTER", "INFO")
                and sum(1 for n in self.topology(s.port) if n.primary_id) == replicas
                for s in self.nodes
            ):
                return
            time.sleep(0.1)
        raise DevStackError(f"the cluster was not ok within {SETTLE_SECONDS} s")

    def stop(self) -> None:
        """Stop every node."""
        for server in self.nodes:
            server.stop()


def start_redis_cluster(
    data_dir: Path, *, primaries: int = 3, replicas_per_primary: int = 1
) -> RedisClusterServers:
    """Start `primaries` * (1 + `replicas_per_primary`) nodes in `data_dir` and join them
    into one cluster; returns once every node sees every slot served."""
    if primaries < 3:
        raise DevStackError("redis-cli --cluster create needs at least 3 primaries")
    nodes: list[Server] = []
    try:
        for index in range(primaries * (1 + replicas_per_primary)):
            node_dir = data_dir / f"node-{index}"
            node_dir.mkdir(parents=True, exist_ok=True)
            nodes.append(start_cluster_node(node_dir))
        cluster = RedisClusterServers(nodes)
        addresses = [f"127.0.0.1:{server.port}" for server in nodes]
        cluster.cli(
            nodes[0].port,
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            str(replicas_per_primary),
            "--cluster-yes",
        )
        cluster.wait_healthy(primaries * replicas_per_primary)
    except BaseException:
        for server in nodes:
            server.stop()
        raise
    return cluster


# Tries per node: its client and bus ports are picked free, but another process may take
# one before redis-server binds it ("Address already in use"); new ports are picked then.
NODE_START_TRIES = 3


def start_cluster_node(node_dir: Path) -> Server:
    """One cluster-enabled redis-server in `node_dir`, on new ports if one picked was taken."""
    attempt = 1
    while True:
        try:
            return start_redis(
                node_dir,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(node_dir.resolve() / "nodes.conf"),
                    "--cluster-port",
                    str(free_port()),
                    # Short, so a dead primary's replica takes over within a test.
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
        except DevStackError as exc:
            if "Address already in use" not in str(exc) or attempt >= NODE_START_TRIES:
                raise
            (node_dir / "nodes.conf").unlink(missing_ok=True)  # written with the lost ports
            attempt += 1
