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

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis

from bench import workload
from bench.load import open_loop
from bench.rule_engine import TWENTY_RULES
from bench.stack import Project, Stack, fetch
from bricqs.schemas import ENVELOPE_FIELD
from bricqs.stream import stream_key
from bricqs_processor.settings import ProcessorSettings


def drain(
    stack: Stack,
    *,
    rules: bool,
    events: int,
    batch_size: int | None = None,
    prepare: Callable[[Project], None] | None = None,
) -> dict[str, Any]:
    """Events per second one processor stores, with 0 or 20 active rules (at the
    processor's default BATCH_SIZE unless one is given); `prepare` sets up the new
    project further before its events are sent (a webhook endpoint, say)."""
    batch_size = batch_size or ProcessorSettings().batch_size
    project = stack.project(f"drain-{20 if rules else 0}", TWENTY_RULES if rules else [])
    if prepare is not None:
        prepare(project)
    stack.reset_stream()
    client = redis.Redis.from_url(stack.redis_url)
    child = None
    try:
        payloads = workload.envelopes(project.project_id, events)
        for start in range(0, len(payloads), 5_000):
            pipe = client.pipeline(transaction=False)
            for payload in payloads[start : start + 5_000]:
                pipe.xadd(stream_key(0), {ENVELOPE_FIELD: payload})
            pipe.execute()
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
        "rules": 20 if rules else 0,
        "events": events,
        "batch_size": batch_size,
        "seconds": round(elapsed, 3),
        "events_per_second": round(events / elapsed, 1) if elapsed > 0 else 0.0,
    }


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
        deadline = time.monotonic() + 120
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
