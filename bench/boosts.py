"""Boost benchmark (issue 18): the processor's drain rate with the bench's 20 rules, with
and without one boost active over every event's time, in alternating pairs (the machine
is shared: compare within a pair).

    uv run --locked python -m bench.boosts [--events N] [--pairs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg

from bench.processor import drains_with_and_without
from bench.stack import Project, Stack
from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import Boost
from bricqs.storage.definitions import create_definition
from bricqs.storage.tenants import Tenant


def boost_overhead(stack: Stack, *, events: int, pairs: int) -> dict[str, Any]:
    """Drain rates with 20 rules, with and without a x1.5 boost of every points rule for
    everyone over the workload's 30 days."""
    boosted: list[str] = []
    now = datetime.now(UTC)

    def with_boost(project: Project) -> None:
        raw = {
            "code": "bench",
            "name": "Bench",
            "multiplier": 1.5,
            "starts_at": (now - timedelta(days=31)).isoformat(),
            "ends_at": (now + timedelta(days=1)).isoformat(),
        }
        boost = parse_definition(Boost, raw)
        assert isinstance(boost, Boost), boost

        async def create() -> None:
            async with await psycopg.AsyncConnection.connect(
                stack.database_url, autocommit=True
            ) as conn:
                tenant = Tenant(project.project_id, "live")
                body = msgspec.json.encode(boost).decode()
                await create_definition(conn, tenant, "boost", boost.code, "active", body)

        asyncio.run(create())
        boosted.append(project.project_id)

    def entries_were_boosted() -> None:
        with psycopg.connect(stack.database_url, autocommit=True) as db:
            row = db.execute(
                "SELECT count(*) FILTER (WHERE boosts IS NOT NULL), count(*)"
                " FROM points_ledger WHERE project_id = %s AND kind = 'earn'",
                (boosted[-1],),
            ).fetchone()
        assert row is not None
        if not row[0]:
            raise RuntimeError(f"no boosted entry among {row[1]} earn entries")
        print(f"  boosted entries: {row[0]:,} of {row[1]:,}", file=sys.stderr)

    return drains_with_and_without(
        stack,
        events=events,
        pairs=pairs,
        prepare=with_boost,
        name="boost",
        check=entries_were_boosted,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the measure and print it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per drain")
    parser.add_argument("--pairs", type=int, default=3, help="drain pairs (without, with)")
    args = parser.parse_args(argv)
    stack = Stack.start()
    try:
        result = boost_overhead(stack, events=args.events, pairs=args.pairs)
    finally:
        stack.close()
    print(json.dumps({"boost": result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
