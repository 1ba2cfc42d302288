"""The test cluster's starter picks new ports when one it picked is taken before
redis-server binds it, instead of failing the run (a bench run lost its cluster so)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bricqs_devstack import cluster
from bricqs_devstack.servers import free_port


def test_a_node_whose_bus_port_was_taken_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        occupied = int(taken.getsockname()[1])
        ports: Iterator[int] = iter([occupied])
        monkeypatch.setattr(cluster, "free_port", lambda: next(ports, None) or free_port())
        node = cluster.start_cluster_node(tmp_path)
        try:
            assert node.process.poll() is None
            client = redis.Redis(port=node.port)
            bus = int(client.config_get("cluster-port")["cluster-port"])
            client.close()
            assert bus not in (0, occupied)
        finally:
            node.stop()
