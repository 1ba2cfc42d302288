"""Scheduler replicas on the test's PostgreSQL and clock, and what they emitted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from redis.asyncio import Redis

from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.schedule import DueWork, due_work
from bricqs.storage.pools import database_pool
from bricqs.storage.standings import Standings
from bricqs_processor.scheduler import Scheduler

TIMED = (
    "streak.at_risk",
    "streak.lost",
    "streak.freeze_consumed",
    "challenge.expired",
    "leaderboard.finished",
)


def rounds(
    database_url: str,
    now: datetime,
    replicas: int = 1,
    work: Sequence[DueWork] | None = None,
    redis_url: str | None = None,
) -> int:
    """One round of each of `replicas` schedulers at once (own pools, own rule caches),
    all at `now`, mirroring standings to `redis_url` if given; items they saw."""

    async def run() -> int:
        redis = Redis.from_url(redis_url) if redis_url else None
        pools = [
            database_pool(
                database_url,
                name=f"scheduler-{n}",
                max_size=2,
                statement_timeout_ms=10_000,
                transaction_pooling=False,
            )
            for n in range(replicas)
        ]
        for pool in pools:
            await pool.open(wait=True)
        try:
            schedulers = [
                Scheduler(
                    pool,
                    RuleCache(0),
                    limit=50,
                    max_calls=200,
                    connection_timeout_s=10,
                    clock=lambda: now,
                    work=work or due_work(Standings(redis) if redis else None),
                )
                for pool in pools
            ]
            return sum(await asyncio.gather(*(s.round() for s in schedulers)))
        finally:
            for pool in pools:
                await pool.close()
            if redis is not None:
                await redis.aclose()

    return asyncio.run(run())


def timed_facts(db: psycopg.Connection[Any], project_id: str) -> list[tuple[Any, ...]]:
    """(type, participant, properties, occurred_at) of the project's clock-made facts."""
    return db.execute(
        "SELECT fact_type, participant_id, properties, occurred_at FROM facts"
        " WHERE project_id = %s AND fact_type = ANY(%s)"
        " ORDER BY occurred_at, fact_type, participant_id",
        (project_id, list(TIMED)),
    ).fetchall()


def subscribe_all(db: psycopg.Connection[Any], project_id: str) -> None:
    """A webhook endpoint of the project's live environment subscribed to everything."""
    db.execute(
        "INSERT INTO webhook_endpoints (endpoint_id, project_id, environment, url,"
        " event_types, secret) VALUES (%s, %s, 'live', 'http://127.0.0.1:9/hook',"
        " ARRAY['*'], 'whsec_test')",
        ("whe_" + project_id, project_id),
    )


def webhook_messages(db: psycopg.Connection[Any], project_id: str) -> list[tuple[str, int]]:
    """(fact type, messages) owed for the project's clock-made facts."""
    return db.execute(
        "SELECT fact_type, count(*)::int FROM webhook_messages WHERE project_id = %s"
        " AND fact_type = ANY(%s) GROUP BY 1 ORDER BY 1",
        (project_id, list(TIMED)),
    ).fetchall()
