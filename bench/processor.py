"""Processor benchmarks: drain rate of one replica, and end-to-end lag at a fixed rate.

Drain: pre-fill the stream, start one `bricqs-processor`, count the project's stored
events from the first commit to the last (start-up excluded). End to end: ingest and
one processor running, single events sent to the async endpoint on schedule; the lag of
each event is `stored_at - received_at` on PostgreSQL's clock (stored_at is its batch
transaction's start, so this understates by the transaction's length) and the
processor's own receipt -> commit histogram (interpolated like Prometheus'
histogram_quantile; its bucket bound is an upper bound).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import psycopg
import redis
from redis.asyncio import Redis

from bench import workload
from bench.load import open_loop
from bench.rule_engine import rules as rule_set
from bench.stack import Project, Stack, fetch
from bricqs.mechanics.cache import RuleCache
from bricqs.pipeline import process_envelopes
from bricqs.schemas import ENVELOPE_FIELD, decode_envelope
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Tenant
from bricqs.stream import stream_key
from bricqs_devstack.servers import start_postgres
from bricqs_processor.settings import ProcessorSettings

K = TypeVar("K")


def drain(
    stack: Stack,
    *,
    rules: bool = False,
    events: int,
    batch_size: int | None = None,
    prepare: Callable[[Project], None] | None = None,
    rule_count: int | None = None,
) -> dict[str, Any]:
    """Events per second one processor stores, with 0 or 20 active rules (`rule_count`
    others: `bench.rule_engine.rules`), at the processor's default BATCH_SIZE unless one is
    given; `prepare` sets up the new project further before its events are sent (a
    webhook endpoint, say). With what PostgreSQL did per event: rows written, and
    statements run when pg_stat_statements is loaded (`enable_statement_stats`)."""
    batch_size = batch_size or ProcessorSettings().batch_size
    count = rule_count if rule_count is not None else 20 if rules else 0
    project = stack.project(f"drain-{count}", rule_set(count))
    if prepare is not None:
        prepare(project)
    stack.reset_stream()
    _forget_earlier_drains(stack, project)
    client = redis.Redis.from_url(stack.redis_url)
    child = None
    try:
        payloads = workload.envelopes(project.project_id, events)
        for start in range(0, len(payloads), 5_000):
            pipe = client.pipeline(transaction=False)
            for payload in payloads[start : start + 5_000]:
                pipe.xadd(stream_key(0), {ENVELOPE_FIELD: payload})
            pipe.execute()
        before = database_work(stack.database_url, postgres_pid(stack))
        _, child = stack.processor(BATCH_SIZE=str(batch_size))
        deadline = time.monotonic() + 300
        # Done when the group has read every entry and has none pending: the processor
        # acknowledges an entry only after its batch committed. Watched in Redis, not by
        # counting rows: a count per poll costs PostgreSQL CPU, taken from the processor
        # under test on a 2-core machine.
        while not _all_acknowledged(client):
            _check(child, deadline)
            time.sleep(0.005)
        finished_at = datetime.now(UTC)
        processor_cpu = cpu_seconds(child.pid)
        # Stopped before counting: a server process publishes its statistics on exit.
        stack.stop(child)
        work = database_work(stack.database_url, postgres_pid(stack)) - before
        stored = stack.stored_events(project.project_id)
        if stored != events:
            raise RuntimeError(f"{stored} of {events} events stored after every ack")
        with psycopg.connect(stack.database_url, autocommit=True) as db:
            first = db.execute(
                "SELECT min(stored_at) FROM events WHERE project_id = %s", (project.project_id,)
            ).fetchone()
            assert first is not None
    finally:
        client.close()
        if child is not None:
            stack.stop(child)
    # From the start of the first batch transaction (PostgreSQL's clock, the same host's)
    # to the poll that saw the last ack: start-up excluded, the last poll interval (5 ms)
    # included.
    elapsed = (finished_at - first[0]).total_seconds()
    return {
        "rules": count,
        "events": events,
        "batch_size": batch_size,
        "seconds": round(elapsed, 3),
        "events_per_second": round(events / elapsed, 1) if elapsed > 0 else 0.0,
        "rows_per_event": round(work.rows / events, 2),
        "statements_per_event": (
            None if work.statements is None else round(work.statements / events, 3)
        ),
        # CPU time per event: steadier than rates on a shared machine, for A/B comparisons.
        "processor_cpu_us_per_event": round(1e6 * processor_cpu / events, 1),
        "postgres_cpu_us_per_event": (
            None if work.cpu is None else round(1e6 * work.cpu / events, 1)
        ),
    }


def _forget_earlier_drains(stack: Stack, project: Project) -> None:
    """Drop the streak deadlines of earlier drains' projects: their events spread over the
    last 30 days, so their runs are all due, and the scheduler beside the consumer would
    judge them during this drain, charging one rule count's clock work to the next."""
    with psycopg.connect(stack.database_url, autocommit=True) as db:
        db.execute(
            "UPDATE streak_state s SET deadline_period = NULL, at_risk_at = NULL, ends_at = NULL"
            " FROM projects p WHERE p.project_id = s.project_id AND p.name LIKE 'drain-%%'"
            " AND p.project_id <> %s AND s.deadline_period IS NOT NULL",
            (project.project_id,),
        )


def drains_with_and_without(
    stack: Stack,
    *,
    events: int,
    pairs: int,
    prepare: Callable[[Project], None],
    name: str,
    check: Callable[[], None] | None = None,
    baseline: Callable[[Project], None] | None = None,
) -> dict[str, Any]:
    """Drain rates with 20 rules, without and with `prepare` (the run's key: `with_<name>`),
    which goes first alternating per pair; the ratio with/without per pair and its median.
    `check` runs after each drain with `prepare`, to prove the feature was at work;
    `baseline`, when given, prepares the drains without. Also the CPU both processes spent
    per event (processor and PostgreSQL), steadier than rates on a shared machine, and its
    ratio without/with (read like the rates': below 1, the feature costs)."""
    ratios, cpu_ratios, runs = [], [], []
    for pair in range(pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        rates, cpu = {}, {}
        for active in order:
            result = drain(
                stack, rules=True, events=events, prepare=prepare if active else baseline
            )
            rates[active] = result["events_per_second"]
            cpu[active] = result["processor_cpu_us_per_event"] + (
                result["postgres_cpu_us_per_event"] or 0
            )
            if active and check is not None:
                check()
            print(f"  drain, {name}={active}: {rates[active]:,.0f} ev/s", file=sys.stderr)
        runs.append(
            {
                "without": rates[False],
                f"with_{name}": rates[True],
                "cpu_us_per_event": {"without": cpu[False], f"with_{name}": cpu[True]},
            }
        )
        ratios.append(rates[True] / rates[False])
        cpu_ratios.append(cpu[False] / cpu[True])
    return {
        "events": events,
        "runs": runs,
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        "cpu_ratios": [round(r, 3) for r in cpu_ratios],
        "median_cpu_ratio": round(statistics.median(cpu_ratios), 3),
    }


async def batch_costs(
    stack: Stack, tenants: dict[K, Tenant], batches: int, size: int
) -> dict[K, list[float]]:
    """Seconds per batch transaction of each tenant, processed in this process, batches
    interleaved (A B C, C B A, ...): less exposed to a shared machine's drift than whole
    drains one after the other."""
    payloads = {
        key: [decode_envelope(p) for p in workload.envelopes(t.project_id, batches * size)]
        for key, t in tenants.items()
    }
    took: dict[K, list[float]] = {key: [] for key in tenants}
    keys = list(tenants)
    rules = RuleCache(60)
    async with (
        await psycopg.AsyncConnection.connect(stack.database_url) as conn,
        Redis.from_url(stack.redis_url) as client,
    ):
        for i in range(batches):
            for key in keys if i % 2 == 0 else keys[::-1]:
                batch = payloads[key][i * size : (i + 1) * size]
                started = time.perf_counter()
                async with conn.transaction():
                    await process_envelopes(
                        conn,
                        batch,
                        idempotency_ttl=timedelta(days=1),
                        rules_for=rules,
                        report=False,
                        standings=Standings(client),
                    )
                took[key].append(time.perf_counter() - started)
    return took


def rule_cost(stack: Stack, events: dict[int, int]) -> list[dict[str, Any]]:
    """The drain at each rule count (`events[count]` events), and its rate over the
    0-rule drain of the same run: what each added rule costs."""
    rows = [drain(stack, rule_count=n, events=e) for n, e in sorted(events.items())]
    base = rows[0]["events_per_second"] if rows and rows[0]["rules"] == 0 else None
    for row in rows:
        if base:
            row["vs_0_rules"] = round(row["events_per_second"] / base, 3)
        print(
            f"  processor, {row['rules']} rules: {row['events_per_second']:,.0f} ev/s,"
            f" {row['rows_per_event']} rows/ev, {row['statements_per_event']} stmts/ev",
            file=sys.stderr,
        )
    return rows


class DatabaseWork(NamedTuple):
    """PostgreSQL's running totals of work: rows written, statements run (None when
    pg_stat_statements is not loaded), CPU seconds of all its processes (None when it
    runs elsewhere)."""

    rows: int
    statements: int | None
    cpu: float | None = None

    def __sub__(self, other: object) -> DatabaseWork:
        assert isinstance(other, DatabaseWork)

        def minus(a: Any, b: Any) -> Any:
            return None if a is None or b is None else a - b

        return DatabaseWork(
            self.rows - other.rows,
            minus(self.statements, other.statements),
            minus(self.cpu, other.cpu),
        )


def postgres_pid(stack: Stack) -> int | None:
    """The postmaster's process id, when the stack started PostgreSQL itself."""
    return next((s.process.pid for s in stack.servers if s.name == "postgres"), None)


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of a process (with its ended children's, and those running, when
    `children`), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> tuple[int, int]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        # utime, stime, cutime, cstime are fields 14-17 (the list starts at field 3).
        return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])

    used, ended = own(pid)
    if not children:
        return used / ticks
    running = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    running += own(int(entry.name))[0]
            except (OSError, ValueError):
                continue  # gone meanwhile
    return (used + ended + running) / ticks


def database_work(database_url: str, pid: int | None = None) -> DatabaseWork:
    """The totals now (a new session: statistics are a snapshot per transaction)."""
    cpu = None if pid is None else cpu_seconds(pid, children=True)
    with psycopg.connect(database_url, autocommit=True) as db:
        row = db.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
        ).fetchone()
        rows = int(row[0]) if row else 0
        try:
            found = db.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
        except psycopg.Error:
            return DatabaseWork(rows, None, cpu)
    return DatabaseWork(rows, int(found[0]) if found else 0, cpu)


def enable_statement_stats(stack: Stack) -> None:
    """Load pg_stat_statements into the stack's own PostgreSQL: it must be preloaded, so
    the server is restarted on its data and port."""
    index, server = next((i, s) for i, s in enumerate(stack.servers) if s.name == "postgres")
    with psycopg.connect(stack.database_url, autocommit=True) as db:
        db.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    server.stop()
    stack.servers[index] = start_postgres(server.data_dir, server.port, fsync=True)
    with psycopg.connect(stack.database_url, autocommit=True) as db:
        db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def _all_acknowledged(client: redis.Redis) -> bool:
    groups = client.xinfo_groups(stream_key(0))
    return bool(groups) and groups[0]["lag"] == 0 and groups[0]["pending"] == 0


def _check(child: Any, deadline: float) -> None:
    if child.poll() is not None:
        raise RuntimeError(f"the processor exited with code {child.returncode}")
    if time.monotonic() > deadline:
        raise RuntimeError("the processor did not finish in time")


def end_to_end(
    stack: Stack, project: Project, ingest_port: int, *, rate: int, seconds: float
) -> dict[str, Any]:
    """Receipt -> committed lag at `rate` single events per second (one processor)."""
    stack.reset_stream()
    metrics_port, child = stack.processor()
    try:
        before = stack.stored_events(project.project_id)
        answers = open_loop(
            ingest_port,
            "/api/v1/ingest/events",
            project.key,
            workload.single_bodies(2_000, seed=7),
            rate=rate,
            seconds=seconds,
        )
        expected = before + answers.requests - answers.errors
        # A processor slower than the offered rate still has a backlog to drain: waited
        # for (at 500 events/s at least), so the lag it causes is measured, not a timeout.
        deadline = time.monotonic() + 120 + answers.requests / 500
        with psycopg.connect(stack.database_url, autocommit=True) as db:
            while stack.stored_events(project.project_id) < expected:
                _check(child, deadline)
                time.sleep(0.1)
            lags = sorted(
                float(r[0])
                for r in db.execute(
                    "SELECT extract(epoch FROM stored_at - received_at) FROM events"
                    " WHERE project_id = %s ORDER BY received_at DESC LIMIT %s",
                    (project.project_id, answers.requests),
                ).fetchall()
            )
        metrics = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        stack.stop(child)

    def q(p: float) -> float:
        return round(1000 * lags[min(len(lags) - 1, int(p * len(lags)))], 2) if lags else 0.0

    return {
        "rate": rate,
        "seconds": seconds,
        "events": len(lags),
        "ingest": answers.as_dict(),
        "lag_p50_ms": q(0.5),
        "lag_p99_ms": q(0.99),
        "lag_p999_ms": q(0.999),
        "lag_max_ms": q(1.0),
        "commit_lag_p99_ms": round(1000 * histogram_quantile(metrics, 0.99), 2),
    }


def histogram_quantile(metrics: str, q: float) -> float:
    """Quantile `q` of the processor's end-to-end lag histogram, interpolated in its bucket
    (as Prometheus' histogram_quantile does)."""
    buckets: list[tuple[float, float]] = []
    for line in metrics.splitlines():
        if line.startswith("bricqs_processor_end_to_end_lag_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return 0.0
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower
