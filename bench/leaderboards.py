"""Leaderboard benchmarks (issue 14).

    uv run --locked python -m bench --only leaderboards [--smoke]
    uv run --locked python -m bench.leaderboards [--sizes 10000,100000,1000000] [--pairs 3]

- reads: one all-time points board with N participants (filled through the storage layer:
  the ledger written in chunks, then the board rebuilt from it, timed), read through the
  api (one Granian worker, one keep-alive connection, one request at a time): top 10, one
  participant's rank, the 5 around one participant; p50/p99 per size, the 1M / 10k ratio,
  and the Redis memory per entry (MEMORY USAGE of the sorted set and the member hash);
- processor: drain rate with the 20 rules (two of which are boards nobody read, so never
  built), with an all-time points board added against without, in alternating pairs (the
  machine may be shared: compare within a pair); and the batch transaction alone, in
  process, with the 20 rules less their boards, with the points board against without,
  interleaved batch by batch (less exposed to drift).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import redis
from redis.asyncio import Redis

from bench.processor import batch_costs, drains_with_and_without
from bench.rule_engine import TWENTY_RULES
from bench.stack import Project, Stack
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS
from bricqs.mechanics.standings import keys_of, rebuild
from bricqs.storage.definitions import create_definition
from bricqs.storage.ledger import LedgerEntry, write_ledger
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Tenant

BOARD = {"code": "bench-board", "name": "Bench board"}
_CHUNK = 20_000


@dataclass(frozen=True)
class Plan:
    """How much each part does."""

    sizes: tuple[int, ...]
    requests: int
    drain_events: int
    pairs: int


FULL = Plan(sizes=(10_000, 100_000, 1_000_000), requests=2_000, drain_events=20_000, pairs=3)
SMOKE = Plan(sizes=(200, 1_000), requests=50, drain_events=300, pairs=1)


async def _add_board(database_url: str, redis_url: str, tenant: Tenant) -> float:
    """Define the board and build it from the ledger; the build's seconds."""
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn,
        Redis.from_url(redis_url, socket_timeout=60) as client,
    ):
        kind, schema = KINDS["leaderboards"]
        parsed = parse_definition(schema, BOARD)
        assert not isinstance(parsed, list), parsed
        body = msgspec.json.encode(parsed).decode()
        await create_definition(conn, tenant, kind, BOARD["code"], "active", body)
        board = (await RuleCache(0)(conn, tenant)).leaderboards[BOARD["code"]]
        started = time.perf_counter()
        await conn.execute("SET statement_timeout = 0")
        async with conn.transaction():
            await rebuild(conn, Standings(client), tenant, board, datetime.now(UTC))
        return time.perf_counter() - started


async def _fill_ledger(database_url: str, tenant: Tenant, participants: int) -> None:
    """One award per participant, amounts and times drawn so that ties happen."""
    rng = random.Random(participants)
    start = datetime.now(UTC) - timedelta(days=30)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for first in range(0, participants, _CHUNK):
            entries = [
                LedgerEntry(
                    entry_id=f"pts_bench_{i:08d}",
                    participant_id=f"p{i:07d}",
                    amount=rng.randrange(1, 50_000),
                    kind="award",
                    source="manual",
                    fact_id=None,
                    cap_bucket=None,
                    occurred_at=start + timedelta(seconds=rng.randrange(30 * 86_400)),
                )
                for i in range(first, min(first + _CHUNK, participants))
            ]
            async with conn.transaction():
                await write_ledger(conn, tenant, entries)


def _latencies(port: int, key: str, paths: list[str]) -> dict[str, float]:
    """p50/p99 in ms of `paths` requested one at a time on one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    took = []
    for path in paths:
        started = time.perf_counter()
        connection.request("GET", path, headers={"X-API-Key": key})
        response = connection.getresponse()
        response.read()
        took.append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status}")
    connection.close()
    took.sort()
    return {
        "requests": len(took),
        "p50_ms": round(1000 * took[len(took) // 2], 2),
        "p99_ms": round(1000 * took[min(len(took) - 1, int(0.99 * len(took)))], 2),
    }


def _settle(stack: Stack) -> None:
    """Let the fill's aftermath pass before reads are timed: PostgreSQL's checkpoint and
    Redis' background save or AOF rewrite (a fork of a large process stalls it)."""
    with psycopg.connect(stack.database_url, autocommit=True) as db:
        db.execute("CHECKPOINT")
    with redis.Redis.from_url(stack.redis_url) as client:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            info: Any = client.info("persistence")
            if not (info.get("rdb_bgsave_in_progress") or info.get("aof_rewrite_in_progress")):
                return
            time.sleep(0.5)


def _memory(redis_url: str, tenant: Tenant, participants: int) -> dict[str, float]:
    keys = keys_of(tenant, BOARD["code"], 0)
    with redis.Redis.from_url(redis_url) as client:
        zset = int(client.memory_usage(keys.group(""), samples=0) or 0)
        members = int(client.memory_usage(keys.members, samples=0) or 0)
    return {
        "sorted_set_bytes_per_entry": round(zset / participants, 1),
        "member_hash_bytes_per_entry": round(members / participants, 1),
        "mb_per_million": round((zset + members) / participants, 1),
    }


def reads(stack: Stack, sizes: list[int], requests: int) -> dict[str, Any]:
    """Read latencies through the api per board size, and the mirror's memory."""
    port, child = stack.granian("bricqs_api.app:create_app")
    results: dict[str, Any] = {}
    try:
        for size in sizes:
            project = stack.project(f"bench-board-{size}")
            tenant = Tenant(project.project_id, "live")
            started = time.perf_counter()
            asyncio.run(_fill_ledger(stack.database_url, tenant, size))
            filled = time.perf_counter() - started
            built = asyncio.run(_add_board(stack.database_url, stack.redis_url, tenant))
            _settle(stack)
            rng = random.Random(size)
            base = f"/api/v1/gamify/leaderboards/{BOARD['code']}"
            who = [f"p{rng.randrange(size):07d}" for _ in range(requests)]
            _latencies(port, project.key, [f"{base}?limit=10"] * (requests // 10))  # warm-up
            row: dict[str, Any] = {
                "fill_seconds": round(filled, 1),
                "rebuild_seconds": round(built, 1),
                "top10": _latencies(port, project.key, [f"{base}?limit=10"] * requests),
                "rank": _latencies(port, project.key, [f"{base}/rank/{p}" for p in who]),
                "around5": _latencies(port, project.key, [f"{base}/around/{p}?k=5" for p in who]),
                **_memory(stack.redis_url, tenant, size),
            }
            results[str(size)] = row
            print(f"  leaderboard reads, {size:,} participants: {_line(row)}", file=sys.stderr)
    finally:
        stack.stop(child)
    low, high = str(min(sizes)), str(max(sizes))
    results["ratio_p50_largest_vs_smallest"] = {
        kind: round(results[high][kind]["p50_ms"] / results[low][kind]["p50_ms"], 2)
        for kind in ("top10", "rank", "around5")
    }
    return results


def _line(row: dict[str, Any]) -> str:
    return (
        ", ".join(
            f"{kind} p50 {row[kind]['p50_ms']} ms p99 {row[kind]['p99_ms']} ms"
            for kind in ("top10", "rank", "around5")
        )
        + f"; {row['mb_per_million']} MB per 1M entries"
    )


def board_overhead(stack: Stack, *, events: int, pairs: int) -> dict[str, Any]:
    """Drain rates with 20 rules, with and without a points board, alternating the order."""
    boarded: list[Tenant] = []

    def with_board(project: Project) -> None:
        tenant = Tenant(project.project_id, "live")
        asyncio.run(_add_board(stack.database_url, stack.redis_url, tenant))
        boarded.append(tenant)

    def board_ranks_the_drain() -> None:  # the board was kept: its mirror ranks them
        keys = keys_of(boarded[-1], BOARD["code"], 0)
        with redis.Redis.from_url(stack.redis_url) as client:
            if int(client.zcard(keys.group(""))) == 0:
                raise RuntimeError("the points board ranks nobody after the drain")

    return drains_with_and_without(
        stack,
        events=events,
        pairs=pairs,
        prepare=with_board,
        name="points_board",
        check=board_ranks_the_drain,
    )


def batch_cost(stack: Stack, *, batches: int, size: int) -> dict[str, Any]:
    """The processor's batch transaction in process, with the 20 rules less their boards,
    for a project with an all-time points board and one without, interleaved batch by
    batch: less exposed to a shared machine's drift than two whole drains."""
    tenants = {}
    # The 20 rules without their two boards: the only board is the one under test.
    rules = [r for r in TWENTY_RULES if r[0] != "leaderboards"]
    for boarded in (False, True):
        project = stack.project(f"batch-cost-{boarded}", rules)
        tenants[boarded] = Tenant(project.project_id, "live")
    asyncio.run(_add_board(stack.database_url, stack.redis_url, tenants[True]))
    took = asyncio.run(batch_costs(stack, tenants, batches, size))
    without, with_board = statistics.median(took[False]), statistics.median(took[True])
    print(
        f"  batch of {size}, median: {1000 * without:.2f} ms without a board,"
        f" {1000 * with_board:.2f} ms with",
        file=sys.stderr,
    )
    return {
        "batches": batches,
        "size": size,
        "median_ms_without": round(1000 * without, 2),
        "median_ms_with_points_board": round(1000 * with_board, 2),
        "throughput_ratio": round(without / with_board, 3),
    }


def run(stack: Stack, smoke: bool) -> dict[str, Any]:
    """Both leaderboard benchmarks, at the smoke or the full plan."""
    plan = SMOKE if smoke else FULL
    return {
        "reads": reads(stack, list(plan.sizes), plan.requests),
        "processor": board_overhead(stack, events=plan.drain_events, pairs=plan.pairs),
        "batch_cost": batch_cost(stack, batches=plan.drain_events // 100, size=100),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the leaderboard benchmarks alone; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--requests", type=int, default=FULL.requests)
    parser.add_argument("--events", type=int, default=FULL.drain_events)
    parser.add_argument("--pairs", type=int, default=FULL.pairs)
    parser.add_argument("--skip-reads", action="store_true")
    parser.add_argument("--skip-processor", action="store_true")
    args = parser.parse_args(argv)
    stack = Stack.start()
    results: dict[str, Any] = {}
    try:
        if not args.skip_reads:
            sizes = [int(s) for s in args.sizes.split(",")]
            results["reads"] = reads(stack, sizes, args.requests)
        if not args.skip_processor:
            results["processor"] = board_overhead(stack, events=args.events, pairs=args.pairs)
            results["batch_cost"] = batch_cost(stack, batches=args.events // 100, size=100)
    finally:
        stack.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
