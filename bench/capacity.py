"""What each part of the pipeline costs per event, for the capacity model in
docs/scaling.md.

    uv run --locked python -m bench.capacity [--seconds 10] [--writers 3]

On a shared machine events/s mostly measure the neighbours; CPU seconds per event do
not (much), and a dedicated core takes about their inverse. So every step reports both:

- ingest: one Granian worker under wrk (single events, 50 connections; batches of 100,
  16 connections): events/s, the worker's CPU ms per event, and Redis' CPU ms per event.
- queue: Redis' CPU ms per event over an entry's whole life (enqueued, read by one
  processor, acknowledged), and that processor's events/s with 0 rules.
- storing: the processor's storing step (`process_envelopes`, batches of 250, WRITERS
  connections on disjoint participants as the processor's concurrent batches are)
  against a fresh durable PostgreSQL (fsync on), with no Redis in between: events/s,
  this process's CPU ms per event (the processor's share), PostgreSQL's CPU ms per event
  (all its processes, from /proc), WAL bytes and table-and-index bytes per event (the
  largest tables too). With 0 and 20 rules; 20 rules with psycopg's prepared statements
  (the pools never prepare, since PgBouncer in transaction mode cannot keep them: this
  shows what that costs); 20 rules through PgBouncer in transaction mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench import workload
from bench.load import wrk
from bench.processor import drain
from bench.rule_engine import TWENTY_RULES
from bench.stack import Stack
from bricqs.mechanics.cache import RuleCache
from bricqs.pipeline import process_envelopes
from bricqs.schemas import Envelope, decode_envelope
from bricqs_devstack.pg_extras import start_pgbouncer

BATCH = 250
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process `root`, its live children, and the children
    it has reaped (a PostgreSQL backend's time moves there when its connection closes)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        if pid == root:
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == root:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server(stack: Stack, name: str) -> int:
    return next(s for s in stack.servers if s.name == name).process.pid


def measure_queue(stack: Stack, events: int) -> dict[str, Any]:
    """One processor (0 rules) draining `events` that were put on the stream as ingest
    puts them: events/s, and Redis' CPU ms per event over the whole life of an entry
    (XADD, read by the group, acknowledged, trimmed)."""
    redis = cpu_seconds(_server(stack, "redis"))
    drained = drain(stack, rules=False, events=events)
    return {
        "processor_events_per_second": drained["events_per_second"],
        "redis_cpu_ms_per_event": round(
            (cpu_seconds(_server(stack, "redis")) - redis) * 1000 / events, 4
        ),
    }


def measure_ingest(stack: Stack, seconds: float) -> dict[str, Any]:
    """Single events and batches of 100 at saturation through one Granian worker."""
    project = stack.project("capacity-ingest")
    port, child = stack.granian("bricqs_ingest.app:create_app")
    cases = {
        "single": ("/api/v1/ingest/events", workload.single_bodies(2_000), 1, 50),
        "batch of 100": ("/api/v1/ingest/events/batch", workload.batch_bodies(100), 100, 16),
    }
    results = {}
    try:
        for name, (path, bodies, per_request, connections) in cases.items():
            stack.reset_stream()
            worker, redis = cpu_seconds(child.pid), cpu_seconds(_server(stack, "redis"))
            load = wrk(port, path, project.key, bodies, connections=connections, seconds=seconds)
            events = load.requests * per_request
            results[name] = {
                "events_per_second": round(events / load.seconds),
                "ingest_cpu_ms_per_event": round(
                    (cpu_seconds(child.pid) - worker) * 1000 / events, 4
                ),
                "redis_cpu_ms_per_event": round(
                    (cpu_seconds(_server(stack, "redis")) - redis) * 1000 / events, 4
                ),
                "errors": load.errors,
            }
    finally:
        stack.stop(child)
        stack.reset_stream()
    return results


def _database_state(url: str) -> tuple[int, int, dict[str, int]]:
    """(WAL insert position in bytes, size of the database in bytes, bytes per table
    with its indexes)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint,"
            " pg_database_size(current_database())"
        ).fetchone()
        tables = conn.execute(
            "SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables"
        ).fetchall()
    assert row is not None
    return int(row[0]), int(row[1]), {name: int(size) for name, size in tables}


async def _store(url: str, batches: list[list[Envelope]], deadline: float, prepare: bool) -> int:
    """Store `batches` in turn until `deadline`; the events stored."""
    rules = RuleCache(refresh_seconds=2.0)
    stored = 0
    async with await psycopg.AsyncConnection.connect(
        url, prepare_threshold=5 if prepare else None
    ) as conn:
        for batch in batches:
            async with conn.transaction():
                await process_envelopes(
                    conn, batch, idempotency_ttl=timedelta(days=30), rules_for=rules, report=False
                )
            stored += len(batch)
            if time.monotonic() > deadline:
                break
    return stored


def measure(
    stack: Stack,
    url: str,
    *,
    rules: bool,
    seconds: float,
    writers: int,
    prepare: bool = False,
) -> dict[str, Any]:
    """One setting: a new project, `writers` connections storing for `seconds`."""
    project = stack.project(f"pg-{20 if rules else 0}", TWENTY_RULES if rules else [])
    events = [decode_envelope(e) for e in workload.envelopes(project.project_id, 120_000)]
    # Disjoint participants per writer, as the processor splits its concurrent batches.
    shares: list[list[Envelope]] = [[] for _ in range(writers)]
    for event in events:
        shares[hash(event.participant_id) % writers].append(event)
    plans = [[share[i : i + BATCH] for i in range(0, len(share), BATCH)] for share in shares]
    postmaster = _server(stack, "postgres")
    wal_before, size_before, tables_before = _database_state(stack.database_url)
    cpu_before, own_before = cpu_seconds(postmaster), own_cpu_seconds()
    started = time.monotonic()

    async def run_all() -> list[int]:
        deadline = time.monotonic() + seconds
        return await asyncio.gather(*(_store(url, p, deadline, prepare) for p in plans))

    stored = sum(asyncio.run(run_all()))
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(postmaster) - cpu_before
    own = own_cpu_seconds() - own_before
    wal_after, size_after, tables_after = _database_state(stack.database_url)
    growth = {name: size - tables_before.get(name, 0) for name, size in tables_after.items()}
    largest = sorted(growth.items(), key=lambda item: -item[1])[:8]
    return {
        "events": stored,
        "events_per_second": round(stored / elapsed),
        "storing_cpu_ms_per_event": round(own * 1000 / stored, 4),
        "postgres_cpu_ms_per_event": round(cpu * 1000 / stored, 4),
        "postgres_cores_busy": round(cpu / elapsed, 2),
        "wal_bytes_per_event": round((wal_after - wal_before) / stored),
        "database_bytes_per_event": round((size_after - size_before) / stored),
        "table_bytes_per_event": {name: round(grew / stored) for name, grew in largest},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=3)
    args = parser.parse_args()
    stack = Stack.start()
    try:
        postgres = next(s for s in stack.servers if s.name == "postgres")
        bouncer = start_pgbouncer(stack.root / "pgbouncer", postgres, pool_size=10)
        stack.servers.append(bouncer)
        direct = stack.database_url
        # name: (rules, prepared statements, url)
        settings = {
            "0 rules": (False, False, direct),
            "20 rules": (True, False, direct),
            "20 rules, prepared statements": (True, True, direct),
            "20 rules, through PgBouncer": (True, False, bouncer.url),
        }
        results: dict[str, Any] = {"ingest": measure_ingest(stack, args.seconds)}
        print("ingest", results["ingest"], flush=True)
        results["queue"] = measure_queue(stack, int(4_000 * args.seconds))
        print("queue", results["queue"], flush=True)
        for name, (rules, prepare, url) in settings.items():
            results[name] = measure(
                stack, url, rules=rules, seconds=args.seconds, writers=args.writers, prepare=prepare
            )
            print(name, results[name], flush=True)
        print(json.dumps(results))
    finally:
        stack.close()


if __name__ == "__main__":
    main()
