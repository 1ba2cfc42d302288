"""Reward claims per second (issue 18), one api worker under Granian as `make run` starts
it, 100 connections kept busy by wrk:

- `one`: every claim on ONE stock reward (each claim holds the reward's row lock from its
  stock update to its commit, so claims of it queue there);
- `hundred`: claims spread over 100 stock rewards;
- `pool`: every claim on ONE code pool reward (codes taken with SKIP LOCKED);
- `award`: for reference, manual points awards to the same participants (one transaction
  through `change_points` too, without the claim's reads, inventory, claim row and fact).

Claimants are distinct participants in turn (10,000 of them, each with points for every
claim), so participant locks rarely meet. Runs interleave the scenarios, so drift on a
shared machine spreads over all of them; the medians over runs are printed last.

    uv run --locked python -m bench.claims [--runs 3] [--seconds 5] [--smoke]
        [--redis-url URL --database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg

from bench.load import wrk
from bench.processor import cpu_seconds
from bench.stack import Stack
from bricqs.mechanics.rewards import RewardDefinition
from bricqs.storage import rewards as store
from bricqs.storage.balances import apply_balance_changes
from bricqs.storage.ledger import LedgerEntry, write_ledger
from bricqs.storage.tenants import Tenant

CONNECTIONS = 100
SCENARIOS = ("one", "hundred", "pool", "award")
_BALANCE = 1_000_000_000


async def _seed(database_url: str, tenant: Tenant, participants: int, codes: int) -> None:
    """The participants' points, the rewards (stock enough for any run) and the pool."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        now = datetime.now(UTC)
        ids = [f"claimant_{i}" for i in range(participants)]
        async with conn.transaction():
            entries = [
                LedgerEntry(f"pts_seed_{p}", p, _BALANCE, "award", "manual", None, None, now)
                for p in ids
            ]
            await write_ledger(conn, tenant, entries)
            await apply_balance_changes(conn, tenant, {p: (_BALANCE, 0) for p in ids})
        stocked = ["one", *(f"r{i}" for i in range(100))]
        for code, pool in [*((c, False) for c in stocked), ("pool", True)]:
            reward = RewardDefinition(
                code=code,
                name=code,
                cost=1,
                type="coupon",
                stock=None if pool else _BALANCE,
                code_pool=pool,
            )
            body = msgspec.json.encode(reward).decode()
            await store.create_reward(conn, tenant, code, "active", reward.stock, pool, body)
        for start in range(0, codes, 1000):
            batch = [f"CODE-{i:08d}" for i in range(start, min(codes, start + 1000))]
            await store.add_codes(conn, tenant, "pool", batch)


def _lines(scenario: str, participants: int) -> list[bytes]:
    """`path body` lines for wrk (`paths_in_bodies`): one request per participant, in turn."""
    lines = []
    for i in range(participants):
        if scenario == "award":
            path, body = "/api/v1/gamify/points/award", {"amount": 1}
        else:
            reward = f"r{i % 100}" if scenario == "hundred" else scenario
            path, body = f"/api/v1/gamify/rewards/{reward}/claim", {}
        text = json.dumps({"participant_id": f"claimant_{i}", **body}, separators=(",", ":"))
        lines.append(f"{path} {text}".encode())
    return lines


def _count(database_url: str, table: str, project_id: str) -> int:
    """Rows of the project in `reward_claims` or `points_ledger` (one per claim or award)."""
    assert table in ("reward_claims", "points_ledger")
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {table} WHERE project_id = %s",  # noqa: S608 - fixed names
            (project_id,),
        ).fetchone()
    return int(row[0]) if row else 0


def _settle(database_url: str, project_id: str) -> int:
    """Wait (up to 10 s) until the requests still in flight when wrk stopped are done (the
    project's ledger stops growing for half a second); its rows."""
    last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + 10
    while time.monotonic() < deadline:
        count = _count(database_url, "points_ledger", project_id)
        if count != last:
            last, stable_since = count, time.monotonic()
        elif time.monotonic() - stable_since >= 0.5:
            break
        time.sleep(0.1)
    return last


def measure(stack: Stack, *, runs: int, seconds: float, participants: int) -> dict[str, Any]:
    """Claims/s, p50 and p99 (ms) of each scenario in each run."""
    project = stack.project("claims bench")
    tenant = Tenant(project.project_id, "live")
    # Pool codes for every claim the pool scenario could make, at 5,000 claims/s.
    codes = int(5_000 * seconds * runs) + 1_000
    asyncio.run(_seed(stack.database_url, tenant, participants, codes))
    port, child = stack.granian("bricqs_api.app:create_app")
    found: dict[str, list[dict[str, float]]] = {s: [] for s in SCENARIOS}
    try:
        for run in range(runs):
            for scenario in SCENARIOS:
                entries = _settle(stack.database_url, project.project_id)
                claims = _count(stack.database_url, "reward_claims", project.project_id)
                cpu = cpu_seconds(child.pid, children=True)
                load = wrk(
                    port,
                    "/",
                    project.key,
                    _lines(scenario, participants),
                    connections=CONNECTIONS,
                    seconds=seconds,
                    paths_in_bodies=True,
                )
                # Requests still in flight when wrk stopped are served (and counted) too.
                entries = _settle(stack.database_url, project.project_id) - entries
                cpu = cpu_seconds(child.pid, children=True) - cpu
                row = {
                    "per_second": round((load.requests - load.errors) / load.seconds, 1),
                    # The api worker's CPU per request served (one ledger entry each):
                    # steadier than rates on a shared machine.
                    "api_cpu_ms": round(1000 * cpu / max(entries, 1), 2),
                    "p50_ms": round(load.p50_ms, 1),
                    "p99_ms": round(load.p99_ms, 1),
                    "errors": load.errors,
                    "claims_stored": _count(stack.database_url, "reward_claims", project.project_id)
                    - claims,
                }
                found[scenario].append(row)
                print(json.dumps({"run": run, "scenario": scenario, **row}), flush=True)
    finally:
        stack.stop(child)
    return {
        scenario: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for scenario, rows in found.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--participants", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="one short run, few claimants")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of starting one")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.seconds, args.participants = 1, 2, 500
    stack = Stack.start(args.redis_url, args.database_url)
    try:
        medians = measure(
            stack, runs=args.runs, seconds=args.seconds, participants=args.participants
        )
    finally:
        stack.close()
    print(json.dumps({"connections": CONNECTIONS, "runs": args.runs, "medians": medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
