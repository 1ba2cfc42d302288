"""Fault injection: a steady event load through the real ingest service (Granian) and real
processor subprocesses while processors are SIGKILLed, Redis and PostgreSQL are restarted
and Redis is frozen (SIGSTOP); then a reconciliation.

What the run must show (issue 7): every event answered 2xx is stored exactly once, as an
event and its fact; every mechanic's totals equal a clean replay of the same events on a
fresh tenant; ingest never answered 500 and never made a client wait past its timeout.
The run happens once per module (the `run` fixture), in phases with their own deadlines
(`harness.py`); each test checks one part. The clients are in `traffic.py`, the faults in
`injection.py`.

CI runs the short plan (every fault kind at least twice); `make soak` the long one. The
module owns its servers, so the session's are never disturbed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import psycopg
import pytest
import redis

from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS
from bricqs.storage.definitions import create_definition
from bricqs.storage.tenants import Tenant as MechanicsTenant
from bricqs.stream import CONSUMER_GROUP, dead_letter_key, stream_key
from bricqs_devstack.servers import Server
from tests.conftest import make_tenant, private_servers
from tests.faults.conftest import SUMMARIES
from tests.faults.harness import (
    Drain,
    Phases,
    Run,
    chosen_plan,
    crashes,
    progress,
    read_rows,
    replay,
    stored_elsewhere,
    stream_state,
    summarise,
)
from tests.faults.injection import KINDS as FAULT_KINDS
from tests.faults.injection import PROCESSOR_ENV, PROCESSORS, Faults
from tests.faults.traffic import CLIENT_TIMEOUT, Client, Traffic
from tests.ingest.helpers import granian_ingest
from tests.processes import ProcessorFactory, wait_until
from tests.readback import Stored, snapshot, stored

PLAN = chosen_plan()
pytestmark = [pytest.mark.slow, pytest.mark.timeout(PLAN.timeout())]

CLIENTS = 4
REDIS_TIMEOUT_MS = 300
DATABASE_TIMEOUT_MS = 1000

# Mechanics of the tenant: points (fixed, from a property, and chained on a badge), a
# badge, a challenge with a reward, a daily streak. No caps: with a cap, which fact earns
# the last points depends on order, and the ledger could not be compared entry for entry.
DEFINITIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "points-rules",
        {
            "code": "login-points",
            "name": "Login",
            "trigger": {"fact_type": "custom.login"},
            "amount": {"fixed": 2},
        },
    ),
    (
        "points-rules",
        {
            "code": "spend",
            "name": "Spend",
            "trigger": {"fact_type": "custom.purchase"},
            "amount": {"property": "amount"},
        },
    ),
    (
        "points-rules",
        {
            "code": "badge-bonus",
            "name": "Badge bonus",
            "trigger": {"fact_type": "badge.awarded"},
            "amount": {"fixed": 7},
        },
    ),
    (
        "badges",
        {
            "code": "regular",
            "name": "Regular",
            "criteria": [{"criterion": {"fact_type": "custom.purchase"}, "threshold": 5}],
        },
    ),
    (
        "challenges",
        {
            "code": "variety",
            "name": "Variety",
            "objectives": [
                {
                    "code": "skus",
                    "criterion": {
                        "fact_type": "custom.purchase",
                        "aggregate": "distinct",
                        "property": "sku",
                    },
                    "target": 4,
                }
            ],
            "reward": {"points": 11},
        },
    ),
    (
        "streaks",
        {"code": "daily", "name": "Daily", "trigger": {"fact_type": "custom.login"}},
    ),
]


def define_mechanics(database_url: str, tenant: MechanicsTenant) -> None:
    async def define() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            for segment, raw in DEFINITIONS:
                kind, schema = KINDS[segment]
                definition = parse_definition(schema, raw)
                assert not isinstance(definition, list), definition
                body = msgspec.json.encode(definition).decode()
                await create_definition(conn, tenant, kind, raw["code"], "active", body)

    asyncio.run(define())


class Drained(NamedTuple):
    """What the stream and PostgreSQL hold once the stream drained."""

    dead_letters: int
    lag_misreports: int
    rows: dict[str, list[tuple[str, int]]]
    stream_state: dict[str, str]
    elsewhere: dict[str, str]
    foreign_consumers: list[str]


@pytest.fixture(scope="module")
def servers(data_root: Path) -> Iterator[dict[str, Server]]:
    # Not under pytest's own temporary folder: every pytest session on the machine resets
    # that folder to mode 0700, and a PostgreSQL recovering from a crash (which runs as
    # another user) must still reach its data directory.
    with private_servers(data_root / "faults") as owned:
        yield owned


@pytest.fixture(scope="module")
def run(
    servers: dict[str, Server],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Run]:
    redis_url, database_url = servers["redis"].url, servers["postgres"].url  # ports are kept
    logs = Path(tmp_path_factory.mktemp("fault-logs"))
    processors = ProcessorFactory(redis_url, database_url, logs)
    traffic = Traffic()
    faults = Faults(servers, processors, traffic)
    tenant = make_tenant(database_url, "faults")
    phases = Phases(lambda: progress(traffic, faults.counts, database_url, tenant.project_id))
    clients: list[Client] = []

    def setup() -> None:
        define_mechanics(database_url, MechanicsTenant(tenant.project_id, "live"))
        for _ in range(PROCESSORS):
            processors.start(**PROCESSOR_ENV)

    def load(clients: list[Client]) -> None:
        """Send and inject for PLAN.load_seconds, longer if a fault kind is still short of
        PLAN.min_each."""
        traffic.started = time.monotonic()
        for thread in [*clients, faults]:
            thread.start()
        ends = time.monotonic() + PLAN.load_seconds
        while time.monotonic() < ends or faults.fewest() < PLAN.min_each:
            assert faults.is_alive(), f"the fault thread stopped: {faults.failure!r}"
            time.sleep(0.2)

    def wind_down(clients: list[Client]) -> None:
        faults.halt.set()
        for client in clients:
            client.halt.set()
        faults.join()
        for client in clients:  # a keyed event in hand is resent until it gets in
            client.join()
        assert faults.failure is None, faults.failure
        for client in clients:
            assert client.failure is None, client.failure

    def drain() -> Drained:
        """Every processor up again, then wait for the stream to drain; what it holds."""
        for processor in [p for p in processors.started if p.alive()]:
            processor.wait_ready()
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            drained = Drain(client)
            wait_until(drained, PLAN.drain, "the stream to drain", processors.logs)
            dead_letters = int(client.xlen(dead_letter_key(0)))
            rows = read_rows(database_url, tenant.project_id)
            missing = [s for s in traffic.sent if s.message_id and not rows.get(s.seq)]
            state = stream_state(client, [s.message_id for s in missing if s.message_id])
            elsewhere = stored_elsewhere(database_url, [s.event_id for s in missing if s.event_id])
            ours = {p.name for p in processors.started}
            consumers = client.xinfo_consumers(stream_key(0), CONSUMER_GROUP)
            foreign = sorted({c["name"].decode() for c in consumers} - ours)
        finally:
            client.close()
        processors.stop_all()
        return Drained(dead_letters, drained.lag_misreports, rows, state, elsewhere, foreign)

    try:
        phases.run("setup", PLAN.setup, setup)
        with granian_ingest(
            redis_url,
            database_url,
            REDIS_TIMEOUT_MS=str(REDIS_TIMEOUT_MS),
            DATABASE_TIMEOUT_MS=str(DATABASE_TIMEOUT_MS),
            # Granian's stderr is a pipe nobody reads during the run: one warning per
            # 503 would fill it and block the server. Errors (a 500's traceback) still go.
            LOG_LEVEL="ERROR",
        ) as base:
            clients += [Client(n, base, tenant.live_key, traffic) for n in range(CLIENTS)]
            phases.run("load", PLAN.load_bound(), lambda: load(clients))
            phases.run("wind-down", PLAN.wind_down, lambda: wind_down(clients))
        after = phases.run("drain", PLAN.drain_deadline(), drain)

        replayed = make_tenant(database_url, "faults replay")
        replay_tenant = MechanicsTenant(replayed.project_id, "live")
        define_mechanics(database_url, replay_tenant)
        result = Run(
            traffic=traffic,
            faults=faults.counts,
            tenant=tenant,
            replay=replay_tenant,
            database_url=database_url,
            rows=after.rows,
            dead_letters=after.dead_letters,
            lag_misreports=after.lag_misreports,
            postgres_crashes=crashes(servers["postgres"].data_dir / "postgres.log"),
            timeline=faults.timeline,
            phases=phases,
            plan=PLAN,
            stream_state=after.stream_state,
            elsewhere=after.elsewhere,
            foreign_consumers=after.foreign_consumers,
        )
        events = [*result.accepted(), *result.stored_after_503()]
        phases.run(
            "replay",
            PLAN.replay_deadline(len(events)),
            lambda: replay(database_url, replay_tenant, events),
        )
        result.summary = summarise(result)
        (logs / "summary.txt").write_text(result.summary + "\n")
        request.config.stash.setdefault(SUMMARIES, []).append(result.summary)
        yield result
    finally:  # after a failed phase too: nothing of the run goes on into other tests
        for thread in [faults, *clients]:
            thread.halt.set()
        processors.stop_all()


# ---------------------------------------------------------------------------------------
# The checks


def test_every_fault_kind_was_injected_under_load(run: Run) -> None:
    assert set(run.faults) == set(FAULT_KINDS), run.summary
    assert min(run.faults.values()) >= PLAN.min_each, run.summary
    assert len(run.accepted()) > 1000, run.summary
    # The faults were felt: some answers were 503.
    assert any(k.startswith("503") for k in run.traffic.statuses), run.summary


def test_ingest_never_answered_500_nor_hung(run: Run) -> None:
    unexplained = {
        label: count
        for label, count in run.traffic.statuses.items()
        if not (label.startswith("20") or label.startswith("503"))
    }
    assert unexplained == {}, run.summary
    assert run.traffic.errors == [], run.traffic.errors[:10]
    assert run.traffic.slowest < CLIENT_TIMEOUT


def test_every_accepted_event_is_stored_once_with_its_fact(run: Run) -> None:
    lost = run.lost()
    assert lost == [], (
        f"{len(lost)} accepted events not stored:\n{run.explain(lost)}\n"
        f"consumers the suite did not start: {run.foreign_consumers}"
    )
    assert run.foreign_consumers == []
    assert run.duplicated() == [], run.summary
    for sent in run.accepted():
        ((event_id, facts),) = run.rows[sent.seq]
        assert event_id == sent.event_id, sent  # the id the client was given
        assert facts == 1, sent
    # Nothing stored that no client sent; nothing dead-lettered.
    known = {s.seq for s in run.traffic.sent}
    assert set(run.rows) <= known
    assert run.dead_letters == 0
    # Participants and the catalog counted each stored event once.
    n = len(run.rows)
    assert stored(run.database_url, run.tenant.project_id) == Stored(n, n, n, n, n)


def test_keyed_events_were_all_accepted_in_the_end(run: Run) -> None:
    # A client that resends with its key gets every event in (none given up on).
    keyed = [s for s in run.traffic.sent if s.keyed]
    assert {s.outcome for s in keyed} == {"accepted"}, Counter(s.outcome for s in keyed)


def test_mechanics_equal_a_clean_replay(run: Run) -> None:
    faulted = snapshot(run.database_url, MechanicsTenant(run.tenant.project_id, "live"))
    clean = snapshot(run.database_url, run.replay)
    assert faulted["badges"] and faulted["challenges"] and faulted["streaks"]  # rules fired
    for part in ("balances", "ledger", "badges", "challenges", "streaks", "progress", "facts"):
        assert faulted[part] == clean[part], part
