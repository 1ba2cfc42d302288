"""What the scheduler costs (issue 19): the deadlines table per million runs, and how fast
due deadlines are judged.

    uv run --locked python -m bench.scheduler [--rows 1000000] [--due 50000] [--repeat 3]

A throwaway PostgreSQL (fsync off) gets `--rows` unbroken daily runs, each one active
period and one deadline, filled in SQL; sizes are read from pg_relation_size. Then
`--due` of them are made due and one scheduler judges them all (each is lost: one
`streak.lost` fact stored and run through the rules, the deadline dropped), timed on the
bench's clock; and a round with nothing due, timed alone. Each timing is repeated and the
median reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.schedule import judge_streaks
from bricqs.storage import tenants
from bricqs.storage.definitions import create_definition
from bricqs.storage.migrate import migrate
from bricqs.storage.pools import database_pool
from bricqs.storage.tenants import Tenant
from bricqs_devstack.servers import start_postgres
from bricqs_processor.scheduler import Scheduler

STREAK = '{"code": "daily", "name": "Daily", "trigger": {"fact_type": "custom.run"}}'
DAY = datetime(2026, 6, 1, tzinfo=UTC)
LOST_AT = DAY + timedelta(days=2)  # the day after DAY has ended unkept


def _fill(conn: psycopg.Connection[Any], tenant: Tenant, rows: int, due: int) -> None:
    """`rows` runs active on DAY; the first `due` watch the next day, the others a far
    one (so the claim's index has `rows` entries of which `due` are due)."""
    index = DAY.date().toordinal()
    conn.execute(
        "INSERT INTO streak_state (project_id, environment, streak_code, participant_id,"
        " last_index, last_run_length, longest, timezone, periods, deadline_period, ends_at)"
        " SELECT %s, %s, 'daily', 'participant-' || n, %s, 1, 1, 'UTC',"
        " int4multirange(int4range(%s, %s, '[]')), %s,"
        " CASE WHEN n <= %s THEN %s ELSE %s END FROM generate_series(1, %s) n",
        (
            tenant.project_id,
            tenant.environment,
            index,
            index,
            index,
            index + 1,
            due,
            DAY + timedelta(days=2),
            DAY + timedelta(days=400),
            rows,
        ),
    )
    conn.execute("VACUUM ANALYZE streak_state")


def _sizes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    names = ("streak_state", "streak_state_pkey", "streak_state_due")
    return {
        name: conn.execute("SELECT pg_relation_size(%s)", (name,)).fetchone()[0]  # type: ignore[index]
        for name in names
    }


async def _judge(url: str, now: datetime, limit: int) -> tuple[float, int]:
    pool = database_pool(
        url, name="bench", max_size=2, statement_timeout_ms=None, transaction_pooling=False
    )
    await pool.open(wait=True)
    try:
        scheduler = Scheduler(
            pool,
            RuleCache(0),
            limit=limit,
            max_calls=1_000_000,
            connection_timeout_s=30,
            clock=lambda: now,
            work=[judge_streaks],
        )
        started = time.perf_counter()
        seen = await scheduler.round()
        return time.perf_counter() - started, seen
    finally:
        await pool.close()


def main() -> None:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        server = start_postgres(Path(root) / "pg", fsync=False)
        try:
            migrate(server.url)
            judged: list[float] = []
            idle: list[float] = []
            for _ in range(args.repeat):
                with psycopg.connect(server.url, autocommit=True) as conn:
                    conn.execute("TRUNCATE streak_state, facts")
                    project = asyncio.run(_project(server.url))
                    tenant = Tenant(project, "live")
                    _fill(conn, tenant, args.rows, args.due)
                    sizes = _sizes(conn)
                seconds, seen = asyncio.run(_judge(server.url, LOST_AT, args.batch))
                assert seen >= args.due, seen
                judged.append(seconds)
                idle.append(asyncio.run(_judge(server.url, LOST_AT, args.batch))[0])
            per_million = {k: round(v * 1_000_000 / args.rows / 2**20) for k, v in sizes.items()}
            rate = args.due / statistics.median(judged)
            print(
                f"rows {args.rows:,}, due {args.due:,}, batch {args.batch}, repeats {args.repeat}"
            )
            print(f"MiB per million runs: {per_million}")
            print(f"judged (lost, fact stored and run through the rules): {rate:,.0f}/s median")
            print(f"round with nothing due: {statistics.median(idle) * 1000:.1f} ms median")
        finally:
            server.stop()


async def _project(url: str) -> str:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        project = await tenants.create_project(conn, "bench")
        await create_definition(
            conn, Tenant(project.project_id, "live"), "streak", "daily", "active", STREAK
        )
    return project.project_id


if __name__ == "__main__":
    main()
