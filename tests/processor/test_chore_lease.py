"""Purging and trimming run on one processor replica per period, not on every replica."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from bricqs.stream import chore_lease_key
from bricqs_devstack.servers import Server
from bricqs_processor.housekeeping import Housekeeping
from bricqs_processor.settings import ProcessorSettings


def _replicas(redis_url: str, database_url: str, count: int) -> list[ProcessorSettings]:
    return [
        ProcessorSettings(redis_url=redis_url, database_url=database_url, consumer_name=f"r{i}")
        for i in range(count)
    ]


def test_a_chore_runs_on_one_replica_per_period_and_on_another_once_the_lease_ends(
    redis_server: Server, postgres_server: Server, redis_client: redis.Redis
) -> None:
    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        client = aioredis.Redis.from_url(redis_server.url)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            postgres_server.url, min_size=1, max_size=4, open=False
        )
        await pool.open()
        try:
            replicas = [
                Housekeeping(s, client, pool)
                for s in _replicas(redis_server.url, postgres_server.url, 3)
            ]
            ran: list[str] = []

            def chore(name: str) -> Any:
                async def run() -> int:
                    ran.append(name)
                    return 0

                return run

            # Every replica's timer fires in the same period: one takes the turn.
            first = await asyncio.gather(
                *(h.in_turn("trim", 60_000, chore(f"r{i}")) for i, h in enumerate(replicas))
            )
            again = await asyncio.gather(
                *(h.in_turn("trim", 60_000, chore(f"r{i}")) for i, h in enumerate(replicas))
            )
            # The period is over (what the lease's expiry does): a replica runs it again,
            # and the purge, a lease of its own, with the real chore.
            await client.delete(chore_lease_key("trim"))
            later = await asyncio.gather(
                *(h.in_turn("trim", 60_000, chore(f"r{i}")) for i, h in enumerate(replicas)),
                *(h.in_turn("purge", 60_000, h.purge) for h in replicas),
            )
            assert len(ran) == 2, ran
            return first, again, later
        finally:
            await pool.close()
            await client.aclose()

    first, again, later = asyncio.run(scenario())
    assert sum(r is not None for r in first) == 1
    assert again == [None, None, None]
    assert sum(r is not None for r in later[:3]) == 1
    assert sum(r is not None for r in later[3:]) == 1
    assert redis_client.pttl(chore_lease_key("purge")) > 0
