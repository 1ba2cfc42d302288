"""Which event loop serves ingest and the api fastest: asyncio, uvloop and rloop in turn,
in one run, each app under Granian `--loop` exactly as shipped otherwise.

    uv run --locked python -m bench.loops [--runs 3] [--seconds 5]

Prints requests/s and server CPU per request (Granian and its worker, from /proc: steadier
than rates on a shared machine) per app and loop for every run, and their medians. The
apps: the bare ASGI reference, ingest's async single endpoint, and the api's manual points
award (a PostgreSQL transaction per request). Runs interleave the loops, so drift on a shared
machine spreads over all of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

from bench import workload
from bench.load import wrk
from bench.processor import cpu_seconds
from bench.stack import Stack

LOOPS = ("asyncio", "uvloop", "rloop")
SINGLE = "/api/v1/ingest/events"
AWARD = "/api/v1/gamify/points/award"


def _award_bodies(n: int) -> list[bytes]:
    return [
        json.dumps({"participant_id": f"user_{i}", "amount": 1}, separators=(",", ":")).encode()
        for i in range(n)
    ]


def measure(
    stack: Stack, *, runs: int, seconds: float
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """(requests/s, server CPU microseconds per request) of each app on each loop, one
    pair per run."""
    project = stack.project("loops")
    apps = [
        ("bare", "bench.bare_asgi:app", SINGLE, workload.single_bodies(2_000)),
        ("ingest", "bricqs_ingest.app:create_app", SINGLE, workload.single_bodies(2_000)),
        ("api", "bricqs_api.app:create_app", AWARD, _award_bodies(2_000)),
    ]
    found: dict[str, dict[str, list[tuple[float, float]]]] = {
        a[0]: {loop: [] for loop in LOOPS} for a in apps
    }
    for run in range(runs):
        for loop in LOOPS:
            for name, target, path, bodies in apps:
                port, child = stack.granian(target, GRANIAN_LOOP=loop)
                try:
                    before = cpu_seconds(child.pid, children=True)
                    rate = wrk(port, path, project.key, bodies, connections=50, seconds=seconds)
                    cpu = cpu_seconds(child.pid, children=True) - before
                finally:
                    stack.stop(child)
                stack.reset_stream()
                per_request = 1e6 * cpu / max(rate.requests, 1)
                found[name][loop].append((round(rate.rate, 1), round(per_request, 1)))
                print(
                    f"run {run + 1} {name:<7}{loop:<8}{rate.rate:>10,.0f} req/s"
                    f"{per_request:>8,.0f} us CPU/req",
                    file=sys.stderr,
                )
    return found


def main(argv: list[str] | None = None) -> int:
    """Measure and print the medians (JSON on stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args(argv)
    stack = Stack.start()
    try:
        found = measure(stack, runs=args.runs, seconds=args.seconds)
    finally:
        stack.close()
    out: dict[str, Any] = {
        name: {
            loop: {
                "runs": v,
                "median_rate": statistics.median(r for r, _ in v),
                "median_cpu_us_per_request": statistics.median(c for _, c in v),
            }
            for loop, v in loops.items()
        }
        for name, loops in found.items()
    }
    for name, loops in out.items():
        line = ", ".join(
            f"{loop} {d['median_rate']:,.0f} req/s {d['median_cpu_us_per_request']:,.0f} us/req"
            for loop, d in loops.items()
        )
        print(f"{name}: {line}", file=sys.stderr)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
