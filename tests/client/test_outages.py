"""Tracking through outages: Redis frozen (the ingest answers 503) and connections cut
after the server took a batch. Every tracked event is stored exactly once afterwards."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bricqs_client import Options
from bricqs_devstack.servers import Server, free_port
from tests.client.conftest import (
    Driver,
    Failures,
    Project,
    Recorder,
    recording,
    wait_for_facts,
)
from tests.client.test_tracking import events
from tests.conftest import make_tenant, private_servers
from tests.ingest.helpers import granian_ingest
from tests.processes import ProcessorFactory, wait_until

pytestmark = pytest.mark.slow
FAST_RETRIES = Options(backoff_initial=0.05, backoff_max=0.5, max_attempts=200, flush_interval=0.05)


@pytest.fixture(scope="module")
def own_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    with private_servers(Path(tmp_path_factory.mktemp("client-outage"))) as servers:
        yield servers


def test_events_tracked_while_redis_is_frozen_are_stored_once_after_it_returns(
    flavour: str, own_servers: dict[str, Server], tmp_path: Path
) -> None:
    redis, postgres = own_servers["redis"], own_servers["postgres"]
    tenant = make_tenant(postgres.url)
    processors = ProcessorFactory(redis.url, postgres.url, tmp_path)
    recorder = Recorder(lambda: 0.0)
    failures = Failures()
    options = replace(FAST_RETRIES, on_error=failures)
    try:
        with granian_ingest(redis.url, postgres.url, REDIS_TIMEOUT_MS="300") as base:
            processors.start()
            driver = Driver(
                flavour, tenant.live_key, base, options, transport=recording(flavour, recorder)
            )
            keys = driver.track_all(events(100, "before"))
            assert driver.flush(30)
            redis.pause()
            try:
                keys += driver.track_all(events(250, "during"))
                wait_until(
                    lambda: sum(1 for _, status, _ in recorder.seen if status == 503) >= 3,
                    30,
                    "the ingest to answer 503 while Redis is frozen",
                )
            finally:
                redis.resume()
            driver.close()
            facts = wait_for_facts(postgres.url, tenant, 350, processors.logs)
    finally:
        processors.stop_all()
    assert (driver.tally.delivered, failures.items) == (350, [])
    assert facts == dict.fromkeys(keys, 1)


class CuttingProxy:
    """A TCP proxy on loopback that, for its first `cuts` responses, closes the client's
    connection as soon as the server starts answering: the server has taken the batch,
    the client never hears so."""

    def __init__(self, upstream_port: int, cuts: int) -> None:
        self.port = free_port()
        self.cuts_left = cuts
        self._upstream = upstream_port
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._upstream))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(65536):
                if answers and self._take_cut():
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts_left > 0:
                self.cuts_left -= 1
                return True
            return False

    def close(self) -> None:
        self._listener.close()


def test_a_connection_cut_after_the_server_took_the_batch_stores_each_event_once(
    flavour: str, project: Project
) -> None:
    port = int(project.ingest_url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cuts=3)
    recorder = Recorder(lambda: 0.0)
    failures = Failures()
    options = replace(FAST_RETRIES, on_error=failures)
    driver = Driver(
        flavour,
        project.tenant.live_key,
        f"http://127.0.0.1:{proxy.port}",
        options,
        transport=recording(flavour, recorder),
    )
    try:
        keys = driver.track_all(events(500))
        driver.close()
    finally:
        proxy.close()
    assert proxy.cuts_left == 0
    assert sum(1 for _, status, _ in recorder.seen if status is None) >= 3
    assert (driver.tally.delivered, failures.items) == (500, [])
    facts = project.facts_once(500)
    assert facts == dict.fromkeys(keys, 1)
