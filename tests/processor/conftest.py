"""Processors as real subprocesses, a real ingest server, and helpers to feed streams
and read back what PostgreSQL holds.

Every processor a test starts is killed at the end of the test if still running; its
log is in the test's tmp_path (shown when a wait times out). The processor factory, the
bounded wait and the read-back helpers live in tests/processes.py and tests/readback.py
(tests/faults uses them too); they are imported here so the processor tests find them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import psycopg
import pytest
import redis
import redis.asyncio as aioredis

from bricqs.ids import new_event_id
from bricqs.mechanics.definitions import Amount, PointsRule, Trigger
from bricqs.schemas import Envelope, encode_envelope
from bricqs.storage.definitions import create_definition
from bricqs.storage.migrate import migrate
from bricqs.storage.tenants import Tenant as MechanicsTenant
from bricqs.stream import CONSUMER_GROUP, shard_for, stream_key
from bricqs_devstack.servers import Server, start_postgres
from tests.conftest import Tenant
from tests.ingest.helpers import granian_ingest
from tests.processes import FAST, Processor, ProcessorFactory, children, wait_until
from tests.readback import Stored, stored

__all__ = ["FAST", "Processor", "ProcessorFactory", "Stored", "stored", "wait_until"]

T = TypeVar("T")


@pytest.fixture
def processors(
    redis_server: Server, postgres_server: Server, redis_client: redis.Redis, tmp_path: Path
) -> Iterator[ProcessorFactory]:
    factory = ProcessorFactory(redis_server.url, postgres_server.url, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[Server]:
    """A PostgreSQL server of this test alone, so stopping it disturbs no other test."""
    server = start_postgres(tmp_path / "postgres", fsync=False)
    migrate(server.url)
    yield server
    server.stop()


@pytest.fixture
def own_processors(
    redis_server: Server, own_postgres: Server, tmp_path: Path
) -> Iterator[ProcessorFactory]:
    """Processors against the test's own PostgreSQL server."""
    factory = ProcessorFactory(redis_server.url, own_postgres.url, tmp_path)
    yield factory
    factory.stop_all()


@contextlib.contextmanager
def frozen(server: Server) -> Iterator[None]:
    """Freeze a server and every process it started (SIGSTOP), thaw them on exit.

    PostgreSQL serves each session from a child process: stopping only the postmaster
    would leave open sessions answering.
    """
    pids = [server.process.pid, *children(server.process.pid)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def ingest_url(redis_server: Server, postgres_server: Server) -> Iterator[str]:
    """The real ingest service under Granian, on a free loopback port."""
    with granian_ingest(redis_server.url, postgres_server.url) as base:
        yield base


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


def with_async_redis(url: str, use: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """Run `use` with an asyncio Redis client of `url` (what the services hold)."""

    async def run() -> T:
        client = aioredis.Redis.from_url(url)
        try:
            return await use(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


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
