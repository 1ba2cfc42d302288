"""Processors as real subprocesses, a real ingest server, and helpers to feed streams
and read back what PostgreSQL holds.

Every processor a test starts is killed at the end of the test if still running; its
log is in the test's tmp_path (shown when a wait times out).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
import redis

from bricqs.devstack import Server, free_port
from bricqs.ids import new_event_id
from bricqs.mechanics.definitions import Amount, PointsRule, Trigger
from bricqs.schemas import Envelope, encode_envelope
from bricqs.storage.mechanics import Tenant as MechanicsTenant
from bricqs.storage.mechanics import create_definition
from bricqs.stream import CONSUMER_GROUP, shard_for, stream_key
from tests.conftest import Tenant, service_env

# Short timings so recovery happens within a test; CLAIM_MIN_IDLE_MS must stay above
# BATCH_TIMEOUT_MS + STATEMENT_TIMEOUT_MS (the processor refuses to start otherwise).
FAST = {
    "CLAIM_MIN_IDLE_MS": "2000",
    "BATCH_TIMEOUT_MS": "1200",
    "STATEMENT_TIMEOUT_MS": "700",
    "RECLAIM_INTERVAL_MS": "250",
    "BLOCK_MS": "200",
    "BACKOFF_INITIAL_MS": "20",
    "BACKOFF_MAX_MS": "300",
    "DATABASE_TIMEOUT_MS": "1000",
    "STATS_INTERVAL_MS": "200",
}


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str] = str
) -> Any:
    """Poll `predicate` until truthy; fail naming `what` (and showing logs) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{logs()}")
        time.sleep(0.05)


@dataclass
class Processor:
    """One `bricqs-processor` subprocess."""

    name: str
    process: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM and wait; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics, keyed by name plus labels as written."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def wait_ready(self, timeout: float = 20) -> None:
        def ready() -> bool:
            assert self.alive(), f"processor exited with {self.process.returncode}\n{self.log()}"
            try:
                return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout, f"processor {self.name} to be ready", self.log)


@dataclass
class ProcessorFactory:
    """Starts processors against given servers; kills leftovers at teardown."""

    redis_url: str
    database_url: str
    tmp_path: Path
    started: list[Processor] = field(default_factory=list)

    def start(self, *, wait: bool = True, **env: str) -> Processor:
        name = env.pop("CONSUMER_NAME", f"test-{uuid.uuid4().hex[:8]}")
        port = free_port()
        log_path = self.tmp_path / f"processor-{name}.log"
        settings = {**FAST, **env, "CONSUMER_NAME": name, "METRICS_PORT": str(port)}
        level = settings.pop("LOG_LEVEL", "INFO")
        environ = service_env(self.redis_url, self.database_url, **settings)
        environ["LOG_LEVEL"] = level  # INFO: the log shows reclaims and retries
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bricqs_processor.main"],
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processor = Processor(name, process, port, log_path)
        self.started.append(processor)
        if wait:
            processor.wait_ready()
        return processor

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in self.started)

    def stop_all(self) -> None:
        for processor in self.started:
            if processor.alive():
                processor.process.kill()
                processor.process.wait(10)


@pytest.fixture
def processors(
    redis_server: Server, postgres_server: Server, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[ProcessorFactory]:
    factory = ProcessorFactory(redis_server.url, postgres_server.url, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def ingest_url(redis_server: Server, postgres_server: Server) -> Iterator[str]:
    """The real ingest service under Granian, on a free loopback port."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "asgi",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "bricqs_ingest.app:create_app",
        ],
        env=service_env(redis_server.url, postgres_server.url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def live() -> bool:
        assert process.poll() is None, "ingest exited while starting"
        try:
            return httpx.get(f"{base}/health/live", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(live, 30, "ingest to start")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------
# Feeding streams directly (what ingest would have accepted)


def envelope(
    tenant: Tenant, n: int, *, participants: int = 20, names: int = 3, **overrides: Any
) -> Envelope:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "event_id": new_event_id(),
        "project_id": tenant.project_id,
        "environment": "live",
        "event_name": f"event_{n % names}",
        "participant_id": f"user_{n % participants}",
        "properties": {"n": n, "label": f"l{n}"},
        "occurred_at": now,
        "received_at": now,
    }
    fields.update(overrides)
    return Envelope(**fields)


def xadd_envelopes(
    client: redis.Redis, envelopes: list[Envelope], shards: int = 1
) -> list[tuple[str, str]]:
    """XADD envelopes to their shards in one pipeline; (stream, message id) of each."""
    pipe = client.pipeline(transaction=False)
    streams = []
    for env in envelopes:
        stream = stream_key(shard_for(env.project_id, env.participant_id, shards))
        streams.append(stream)
        pipe.xadd(stream, {"e": encode_envelope(env)})
    ids = pipe.execute()
    return [(s, i.decode()) for s, i in zip(streams, ids, strict=True)]


class Feeder(threading.Thread):
    """XADDs `total` envelopes (or until `stop()`) in chunks at a steady pace, in the
    background."""

    def __init__(
        self,
        client: redis.Redis,
        tenant: Tenant,
        total: int,
        *,
        chunk: int = 50,
        interval: float = 0.02,
        shards: int = 1,
    ) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.tenant = tenant
        self.total = total
        self.chunk = chunk
        self.interval = interval
        self.shards = shards
        self.event_ids: list[str] = []
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            sent = 0
            while sent < self.total and not self._halt.is_set():
                size = min(self.chunk, self.total - sent)
                batch = [envelope(self.tenant, sent + i) for i in range(size)]
                xadd_envelopes(self.client, batch, self.shards)
                self.event_ids.extend(e.event_id for e in batch)
                sent += size
                time.sleep(self.interval)
        except BaseException as exc:
            self.error = exc
            raise

    def finish(self, timeout: float = 60) -> list[str]:
        self.join(timeout)
        assert not self.is_alive(), "feeder did not finish"
        assert self.error is None, f"feeder failed: {self.error!r}"
        return self.event_ids


# ---------------------------------------------------------------------------------------
# Reading back


@dataclass(frozen=True)
class Stored:
    """What PostgreSQL holds for one project (facts: those derived from events)."""

    events: int
    distinct_events: int
    facts: int
    participant_events: int
    catalog_events: int


def stored(database_url: str, project_id: str) -> Stored:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            """
            SELECT
              (SELECT count(*) FROM events WHERE project_id = %(p)s),
              (SELECT count(DISTINCT event_id) FROM events WHERE project_id = %(p)s),
              (SELECT count(*) FROM facts
                WHERE project_id = %(p)s AND fact_type LIKE 'custom.%%'),
              (SELECT coalesce(sum(event_count), 0) FROM participants WHERE project_id = %(p)s),
              (SELECT coalesce(sum(event_count), 0) FROM event_catalog WHERE project_id = %(p)s)
            """,
            {"p": project_id},
        ).fetchone()
    assert row is not None
    return Stored(*(int(v) for v in row))


def stored_event_ids(database_url: str, project_id: str) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT event_id FROM events WHERE project_id = %s", (project_id,)
        ).fetchall()
    return [r[0] for r in rows]


def event_count(database_url: str, project_id: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE project_id = %s", (project_id,))
        return int(row.fetchone()[0])  # type: ignore[index]


def pending(client: redis.Redis, stream: str = stream_key(0), consumer: str | None = None) -> int:
    """Entries of the group pending (for one consumer, if named)."""
    if consumer is None:
        return int(client.xpending(stream, CONSUMER_GROUP)["pending"])
    return len(client.xpending_range(stream, CONSUMER_GROUP, "-", "+", 100_000, consumer))


def add_points_rule(database_url: str, tenant: Tenant, fact_type: str, points: int) -> None:
    """A live-environment earn rule: `points` for each fact of `fact_type`."""
    rule = PointsRule(
        code=f"rule-{uuid.uuid4().hex[:8]}",
        name="test rule",
        trigger=Trigger(fact_type=fact_type),
        amount=Amount(fixed=points),
    )

    async def create() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            created = await create_definition(
                conn,
                MechanicsTenant(tenant.project_id, "live"),
                "points_rule",
                rule.code,
                rule.status,
                msgspec.json.encode(rule).decode(),
            )
            assert created is not None

    asyncio.run(create())


def points(database_url: str, project_id: str) -> tuple[int, int]:
    """(ledger entries, total earned over all participants) of a project."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM points_ledger WHERE project_id = %(p)s),"
            " (SELECT coalesce(sum(total_earned), 0) FROM points_balances"
            "  WHERE project_id = %(p)s)",
            {"p": project_id},
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def exactly_once(s: Stored, n: int) -> bool:
    """Every one of n events stored once, with its fact and counted once."""
    return s == Stored(n, n, n, n, n)
