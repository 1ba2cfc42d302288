"""Live end-to-end lag with and without a historical import under way (issue 19).

One ingest and, as `make run` runs them, a live processor and an import processor
(`--layouts split`, the default, the import one at nice 10; `split-even`: both at the
same priority; `one`: a single processor reading both), and a project
with the bench's 20 rules. A round has two phases, each with a project of its own: live
single events sent on schedule (open loop) at `--rate` for `--seconds`; in the second
phase, at the same time, `--events` events are sent as historical batches of 100
(`"historical": true`, timestamps spread over the past year) from one thread, as fast as
ingest takes them (ingest paces them at `--import-pace`). A live event's lag is
`stored_at - received_at` on PostgreSQL's clock (as `bench.processor.end_to_end` measures
it). After the second phase the import is waited for, so the next round starts with empty
streams. Printed: each round's live p50/p99 with and without the import, their p99 ratio,
how long the import took, and the medians.

    uv run --locked python -m bench.historical_import            # 3 rounds, 50,000 events
    uv run --locked python -m bench.historical_import --smoke    # CI: 1 short round
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench import workload
from bench.load import open_loop
from bench.rule_engine import rules as rule_set
from bench.stack import Project, Stack

BATCH = "/api/v1/ingest/events/batch"


def import_bodies(n: int, seed: int = 5) -> list[bytes]:
    """Historical batches of 100 of the bench's events, each a day to a year old."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    events = workload.events(n, seed)
    for event in events:
        event["timestamp"] = (now - timedelta(minutes=rng.randrange(1_440, 525_600))).isoformat()
    return [
        json.dumps({"historical": True, "events": events[i : i + 100]}).encode()
        for i in range(0, n, 100)
    ]


class Importer(threading.Thread):
    """Sends historical batches one after the other on one connection."""

    def __init__(self, port: int, key: str, bodies: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.port, self.key, self.bodies = port, key, bodies
        self.sent = 0
        self.error: str | None = None
        self.seconds = 0.0
        self.finished_at = 0.0
        """When the last batch was answered (epoch seconds)."""

    def run(self) -> None:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"X-API-Key": self.key, "Content-Type": "application/json"}
        try:
            for body in self.bodies:
                while True:
                    conn.request("POST", BATCH, body, headers)
                    answer = conn.getresponse()
                    answer.read()
                    if answer.status not in (429, 503):  # backpressure or pace: wait
                        break
                    time.sleep(float(answer.getheader("Retry-After") or 1))
                if answer.status != 202:
                    self.error = f"HTTP {answer.status}"
                    return
                self.sent += body.count(b'"event_name"')
        finally:
            conn.close()
            self.seconds = time.monotonic() - started
            self.finished_at = time.time()


def live_lags(
    stack: Stack, project: Project, expected: int, deadline: float
) -> list[tuple[float, float]]:
    """(received at, lag) in seconds of the project's live events, once `expected` of
    them are stored."""
    query = (
        "SELECT extract(epoch FROM received_at), extract(epoch FROM stored_at - received_at)"
        " FROM events WHERE project_id = %s AND occurred_at = received_at"
    )
    with psycopg.connect(stack.database_url, autocommit=True) as db:
        while True:
            rows = db.execute(query, (project.project_id,)).fetchall()
            if len(rows) >= expected or time.monotonic() > deadline:
                return [(float(at), float(lag)) for at, lag in rows]
            time.sleep(0.2)


def quantile(values: list[float], q: float) -> float:
    """Quantile `q` of sorted `values`, in ms."""
    return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 2) if values else 0.0


def phase(
    stack: Stack, port: int, args: argparse.Namespace, name: str, *, with_import: bool
) -> dict[str, Any]:
    """One phase: live traffic, with or without an import at the same time."""
    project = stack.project(name, rule_set(20))
    importer = Importer(port, project.key, import_bodies(args.events)) if with_import else None
    if importer:
        importer.start()
    answers = open_loop(
        port,
        "/api/v1/ingest/events",
        project.key,
        workload.single_bodies(2_000, seed=7),
        rate=args.rate,
        seconds=args.seconds,
    )
    expected = answers.requests - answers.errors
    timed = live_lags(stack, project, expected, time.monotonic() + 120)
    lags = sorted(lag for _, lag in timed)
    result: dict[str, Any] = {
        "live_events": len(lags),
        "live_expected": expected,
        "lag_p50_ms": quantile(lags, 0.5),
        "lag_p99_ms": quantile(lags, 0.99),
    }
    if importer:
        importer.join(600)
        # Where the delay comes from: while the import is sent, ingest and Redis share
        # the machine with it too; afterwards only the processor and PostgreSQL do.
        sending = sorted(lag for at, lag in timed if at <= importer.finished_at)
        result["lag_p99_while_sent_ms"] = quantile(sending, 0.99)
        result["lag_p99_after_sent_ms"] = quantile(
            sorted(lag for at, lag in timed if at > importer.finished_at), 0.99
        )
        result["live_while_sent"] = len(sending)
        if importer.error:
            raise RuntimeError(f"the import failed: {importer.error}")
        started = time.monotonic()
        deadline = started + 600
        while stack.stored_events(project.project_id) < expected + importer.sent:
            if time.monotonic() > deadline:
                raise RuntimeError("the import was not stored within 10 minutes")
            time.sleep(0.5)
        result["imported"] = importer.sent
        result["import_sent_s"] = round(importer.seconds, 1)
        result["import_stored_s"] = round(time.monotonic() - started, 1)
    return result


# How the processor is laid out: one replica reading both streams of each shard, or a
# live replica beside a replica of its own for imports, at nice 10 as `make run` runs
# it (split) or at the same priority (split-even).
LAYOUTS = {
    "one": [{}],
    "split": [
        {"PROCESSOR_STREAMS": "live"},
        {"PROCESSOR_STREAMS": "historical", "PROCESSOR_NICE": "10"},
    ],
    "split-even": [{"PROCESSOR_STREAMS": "live"}, {"PROCESSOR_STREAMS": "historical"}],
}


def layout_round(
    stack: Stack, port: int, args: argparse.Namespace, layout: str, n: int
) -> dict[str, Any]:
    """One round with the processors of `layout`, started for it and stopped after."""
    extra = {
        "HISTORICAL_REST_RATIO": str(args.rest_ratio),
        "HISTORICAL_BATCH_SIZE": str(args.import_batch),
    }
    processors = [stack.processor(**(env | extra))[1] for env in LAYOUTS[layout]]
    try:
        without = phase(stack, port, args, f"{layout} live alone {n}", with_import=False)
        with_ = phase(stack, port, args, f"{layout} live and import {n}", with_import=True)
    finally:
        for child in processors:
            stack.stop(child)
    ratio = with_["lag_p99_ms"] / max(without["lag_p99_ms"], 0.01)
    print(
        f"round {n + 1} ({layout}): live p50/p99 without import {without['lag_p50_ms']}/"
        f"{without['lag_p99_ms']} ms, with {with_['lag_p50_ms']}/{with_['lag_p99_ms']}"
        f" ms (x{ratio:.2f}; p99 {with_['lag_p99_while_sent_ms']} ms while the import was"
        f" sent, {with_['lag_p99_after_sent_ms']} ms after); {with_['imported']} imported, sent in"
        f" {with_['import_sent_s']} s, stored {with_['import_stored_s']} s after",
        flush=True,
    )
    return {"without": without, "with": with_, "p99_ratio": round(ratio, 2)}


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print their results."""
    parser = argparse.ArgumentParser(prog="python -m bench.historical_import")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=50_000, help="events imported per round")
    parser.add_argument("--rate", type=float, default=100.0, help="live events per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="live traffic per phase")
    parser.add_argument(
        "--layouts",
        default="split",
        help="comma-separated, alternated within each round: one (a processor reading"
        " both streams), split (a live replica and a historical one at nice 10, as make"
        " run) or split-even (the two at the same priority)",
    )
    parser.add_argument("--rest-ratio", type=float, default=1.0, help="HISTORICAL_REST_RATIO")
    parser.add_argument("--import-batch", type=int, default=10, help="HISTORICAL_BATCH_SIZE")
    parser.add_argument(
        "--import-pace", type=float, default=1_000.0, help="HISTORICAL_RATE_PER_SECOND (ingest)"
    )
    parser.add_argument("--smoke", action="store_true", help="1 round, 2,000 events, 3 s")
    parser.add_argument("--redis-url")
    parser.add_argument("--database-url")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.events, args.seconds = 1, 2_000, 3.0
    layouts = args.layouts.split(",")
    if unknown := set(layouts) - set(LAYOUTS):
        parser.error(f"unknown layout(s): {', '.join(sorted(unknown))}")
    stack = Stack.start(args.redis_url, args.database_url)
    rounds: dict[str, list[dict[str, Any]]] = {layout: [] for layout in layouts}
    try:
        port, _ = stack.granian(
            "bricqs_ingest.app:create_app", HISTORICAL_RATE_PER_SECOND=str(args.import_pace)
        )
        for n in range(args.rounds):
            for layout in layouts:
                rounds[layout].append(layout_round(stack, port, args, layout, n))
    finally:
        stack.close()
    summary = {layout: summarise(runs) for layout, runs in rounds.items()}
    for layout, figures in summary.items():
        print(
            f"{layout}: medians over {len(rounds[layout])} rounds: live p99"
            f" {figures['median_p99_without_ms']} ms without, {figures['median_p99_with_ms']}"
            f" ms with the import; ratio x{figures['median_p99_ratio']}"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)
    return 0


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A layout's rounds and their medians."""
    return {
        "rounds": runs,
        "median_p99_without_ms": statistics.median(r["without"]["lag_p99_ms"] for r in runs),
        "median_p99_with_ms": statistics.median(r["with"]["lag_p99_ms"] for r in runs),
        "median_p99_ratio": statistics.median(r["p99_ratio"] for r in runs),
    }


if __name__ == "__main__":
    sys.exit(main())
