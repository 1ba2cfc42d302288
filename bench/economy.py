"""The economy's cost on the processor (issue 18): the bench's 20 rules, against the same
plus one boost (x1.5 on every points rule, for everyone, over the workload's whole time)
and one expiring points rule (each of its credits also writes a lot): with `--expiring
add` a 21st rule on purchases (most events; so the figure includes the cost of one more
rule, not only of its expiry), with `--expiring within` the 20 rules' own `spend` rule made
to expire (the same rules, so the figure is the economy's cost alone).

    uv run --locked python -m bench.economy [--batches N] [--size N] [--runs N]
                                             [--expiring add|within]

Measured as batch transactions processed in this process, the projects' batches
interleaved (A B, B A, ...), the steadier figure on a shared machine; the ratio is
seconds per batch without the economy over with it (1.0: free; the issue asks >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg

from bench.expiry import EXPIRING
from bench.processor import batch_costs
from bench.rule_engine import rules as rule_set
from bench.stack import Stack
from bricqs.storage.tenants import Tenant


def economy_rules(expiring: str) -> list[tuple[str, dict[str, Any]]]:
    """The 20 rules with the boost and the expiring rule, as the admin api takes them."""
    now = datetime.now(UTC)
    boost = {
        "code": "bench-boost",
        "name": "Bench boost",
        "multiplier": 1.5,
        "starts_at": (now - timedelta(days=31)).isoformat(),
        "ends_at": (now + timedelta(days=1)).isoformat(),
    }
    if expiring == "add":
        return [*rule_set(20), ("boosts", boost), ("points-rules", msgspec.to_builtins(EXPIRING))]
    own = [
        (segment, raw | {"expires_after_days": 30} if raw["code"] == "spend" else raw)
        for segment, raw in rule_set(20)
    ]
    return [*own, ("boosts", boost)]


def economy_overhead(
    stack: Stack, *, batches: int, size: int, run: int, expiring: str
) -> dict[str, Any]:
    """Median seconds per batch of the 20 rules with and without the economy; the ratio."""
    tenants = {
        key: Tenant(stack.project(f"economy-{key}-{run}", definitions).project_id, "live")
        for key, definitions in (("without", rule_set(20)), ("with", economy_rules(expiring)))
    }
    took = asyncio.run(batch_costs(stack, tenants, batches, size))
    _at_work(stack, tenants["with"])
    median = {key: statistics.median(seconds) for key, seconds in took.items()}
    ratio = median["without"] / median["with"]
    print(
        f"  run {run}: batch of {size}, median ms without {1000 * median['without']:.2f},"
        f" with {1000 * median['with']:.2f}, ratio {ratio:.3f}",
        file=sys.stderr,
    )
    return {
        "median_ms": {key: round(1000 * s, 2) for key, s in median.items()},
        "ratio": round(ratio, 3),
    }


def _at_work(stack: Stack, tenant: Tenant) -> None:
    """Both features did their work in the project with the economy."""
    with psycopg.connect(stack.database_url, autocommit=True) as db:
        row = db.execute(
            "SELECT (SELECT count(*) FROM points_lots WHERE project_id = %(p)s),"
            " (SELECT count(*) FROM points_ledger WHERE project_id = %(p)s"
            "  AND boosts IS NOT NULL)",
            {"p": tenant.project_id},
        ).fetchone()
    if not row or not row[0] or not row[1]:
        raise RuntimeError(f"the economy was not at work: lots, boosted entries = {row}")


def main(argv: list[str] | None = None) -> int:
    """Run the measure and print it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60, help="batches per project")
    parser.add_argument("--size", type=int, default=250, help="events per batch")
    parser.add_argument("--runs", type=int, default=3, help="runs (fresh projects each)")
    parser.add_argument("--expiring", choices=("add", "within"), default="add")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of starting one")
    args = parser.parse_args(argv)
    stack = Stack.start(args.redis_url, args.database_url)
    try:
        runs = [
            economy_overhead(
                stack, batches=args.batches, size=args.size, run=n, expiring=args.expiring
            )
            for n in range(args.runs)
        ]
    finally:
        stack.close()
    ratios = [r["ratio"] for r in runs]
    summary = {"expiring": args.expiring, "runs": runs, "median_ratio": statistics.median(ratios)}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
