"""Points expiry benchmark (issue 18).

    uv run --locked python -m bench.expiry [--events N] [--pairs N]

The processor's drain rate with the bench's 20 rules plus one points rule whose points
expire (on purchases, most events: each of its credits also writes a lot), against
- `rule`: the 20 rules alone (the issue's measure: the rule and its expiry together);
- `lots`: the 20 rules plus the same rule without expiry (what the lots alone cost);
in alternating pairs (the machine is shared: compare within a pair); and
- `batches`: the three projects' batch transactions in process, interleaved batch by
  batch, the steadier figure on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import psycopg

from bench.processor import batch_costs, drains_with_and_without
from bench.rule_engine import BUY
from bench.rule_engine import rules as rule_set
from bench.stack import Project, Stack
from bricqs.mechanics.definitions import Amount, PointsRule, Trigger
from bricqs.storage.definitions import create_definition
from bricqs.storage.tenants import Tenant

EXPIRING = PointsRule(
    code="expiring-spend",
    name="n",
    trigger=Trigger(fact_type=BUY),
    amount=Amount(fixed=5),
    expires_after_days=30,
)


def expiry_overhead(
    stack: Stack, *, events: int, pairs: int, against_same_rule: bool
) -> dict[str, Any]:
    """Drain rates with the expiring rule and without it (or with the same rule without
    expiry), alternating which goes first."""
    tenants: list[Tenant] = []

    def adding(rule: PointsRule) -> Callable[[Project], None]:
        def add(project: Project) -> None:
            tenant = Tenant(project.project_id, "live")
            body = msgspec.json.encode(rule).decode()

            async def create() -> None:
                async with await psycopg.AsyncConnection.connect(
                    stack.database_url, autocommit=True
                ) as conn:
                    await create_definition(conn, tenant, "points_rule", rule.code, "active", body)

            asyncio.run(create())
            tenants.append(tenant)

        return add

    def lots_were_written() -> None:
        with psycopg.connect(stack.database_url, autocommit=True) as db:
            row = db.execute(
                "SELECT count(*) FROM points_lots WHERE project_id = %s",
                (tenants[-1].project_id,),
            ).fetchone()
        if not row or not row[0]:
            raise RuntimeError("the expiring rule made no lot during the drain")

    return drains_with_and_without(
        stack,
        events=events,
        pairs=pairs,
        prepare=adding(EXPIRING),
        name="expiring_rule",
        check=lots_were_written,
        baseline=(
            adding(msgspec.structs.replace(EXPIRING, expires_after_days=None))
            if against_same_rule
            else None
        ),
    )


def batch_overhead(stack: Stack, *, batches: int, size: int) -> dict[str, Any]:
    """Median seconds per batch with the 20 rules alone, plus the rule without expiry, and
    plus the expiring rule; the throughput ratios of the expiring rule against both."""
    plain = msgspec.structs.replace(EXPIRING, expires_after_days=None)
    extra = {"none": [], "plain": [plain], "expiring": [EXPIRING]}
    tenants = {
        key: Tenant(
            stack.project(
                f"expiry-batches-{key}",
                [*rule_set(20), *(("points-rules", msgspec.to_builtins(r)) for r in rules)],
            ).project_id,
            "live",
        )
        for key, rules in extra.items()
    }
    took = asyncio.run(batch_costs(stack, tenants, batches, size))
    median = {key: statistics.median(seconds) for key, seconds in took.items()}
    print(
        f"  batch of {size}, median ms: "
        + ", ".join(f"{key} {1000 * s:.2f}" for key, s in median.items()),
        file=sys.stderr,
    )
    return {
        "batches": batches,
        "size": size,
        "median_ms": {key: round(1000 * s, 2) for key, s in median.items()},
        "ratio_against_no_rule": round(median["none"] / median["expiring"], 3),
        "ratio_against_the_rule_without_expiry": round(median["plain"] / median["expiring"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the measure and print it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per drain")
    parser.add_argument("--pairs", type=int, default=3, help="drain pairs (without, with)")
    parser.add_argument("--batches", type=int, default=60, help="batches per project")
    parser.add_argument("--size", type=int, default=250, help="events per batch")
    parser.add_argument("--only", default="rule,lots,batches")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {}
    stack = Stack.start()
    try:
        for part in args.only.split(","):
            if part == "batches":
                result[part] = batch_overhead(stack, batches=args.batches, size=args.size)
                continue
            result[part] = expiry_overhead(
                stack, events=args.events, pairs=args.pairs, against_same_rule=part == "lots"
            )
    finally:
        stack.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
