"""Drain rates of source trees side by side: `bench.processor.drain` at chosen rule counts,
the processor started from each tree in turn (its PYTHONPATH), alternating the order per
round, medians over rounds. For A/B measures of the processor's write path on a shared
machine, where only ratios within one run compare.

    uv run --locked python -m bench.drain_ab --rules 0,20 --rounds 3 \\
        --tree main=/tmp/main/libs/bricqs/src --tree new=libs/bricqs/src \\
        [--setup main=before.sql]  # SQL run before each of that tree's drains

A tree's `--setup` adapts the shared database to it (an index a migration dropped, say).
An empty path is the installed code.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import psycopg

from bench.processor import drain, enable_statement_stats
from bench.stack import Stack

COLUMNS = (
    "events_per_second",
    "rows_per_event",
    "statements_per_event",
    "processor_cpu_us_per_event",
    "postgres_cpu_us_per_event",
)


def measure(
    stack: Stack,
    trees: dict[str, str],
    setups: dict[str, str],
    counts: list[int],
    rounds: int,
    events: dict[int, int],
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Every tree's drain at every rule count, `rounds` times, trees alternating."""
    found: dict[tuple[str, int], list[dict[str, Any]]] = {}
    names = list(trees)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            os.environ["PYTHONPATH"] = trees[name]
            for count in counts:
                if name in setups:
                    with psycopg.connect(stack.database_url, autocommit=True) as db:
                        db.execute(setups[name].encode())
                row = drain(stack, rule_count=count, events=events.get(count, 20_000))
                found.setdefault((name, count), []).append(row)
                print(f"  {name}, {count} rules: {json.dumps(row)}", file=sys.stderr)
    return found


def table(found: dict[tuple[str, int], list[dict[str, Any]]]) -> str:
    """Medians per tree and rule count, and each rate over the first tree's 0-rule rate."""
    lines = [
        f"{'tree':>10} {'rules':>5} {'events/s':>9} {'vs 0':>5} {'rows/ev':>7}"
        f" {'stmts/ev':>8} {'proc us/ev':>10} {'pg us/ev':>8}  rates"
    ]
    medians = {
        key: {c: statistics.median(r[c] or 0 for r in rows) for c in COLUMNS}
        for key, rows in found.items()
    }
    for (name, count), m in sorted(medians.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        base = medians.get((name, 0), {}).get("events_per_second")
        ratio = f"{m['events_per_second'] / base:5.2f}" if base else "    -"
        rates = ",".join(f"{r['events_per_second']:.0f}" for r in found[(name, count)])
        lines.append(
            f"{name:>10} {count:>5} {m['events_per_second']:>9,.0f} {ratio}"
            f" {m['rows_per_event']:>7.2f} {m['statements_per_event']:>8.3f}"
            f" {m['processor_cpu_us_per_event']:>10.0f} {m['postgres_cpu_us_per_event']:>8.0f}"
            f"  {rates}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="0,20", help="comma-separated rule counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000, help="events per drain")
    parser.add_argument(
        "--tree", action="append", default=[], help="name=path (PYTHONPATH); repeatable"
    )
    parser.add_argument("--setup", action="append", default=[], help="name=file.sql")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of starting one")
    args = parser.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree) or {"installed": ""}
    setups = {n: Path(f).read_text() for n, f in (s.split("=", 1) for s in args.setup)}
    counts = [int(n) for n in args.rules.split(",")]
    # The 0-rule drain is the cheapest per event: twice the events for a comparable time.
    events = {n: args.events * 2 if n == 0 else args.events for n in counts}
    stack = Stack.start(args.redis_url, args.database_url)
    try:
        if args.database_url is None:
            enable_statement_stats(stack)
        found = measure(stack, trees, setups, counts, args.rounds, events)
    finally:
        stack.close()
    print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
