"""Periodic chores beside the consumer loop: trimming, purging, refreshing gauges (the
clock's outcomes, points expiry included, are the scheduler's: `scheduler.py`).

Trimming and purging are work for the whole cluster, not per replica: each period, the
replica that first takes the chore's lease in Redis (`SET NX PX`, held for the period)
runs it, and the others skip that period. A lease rather than a PostgreSQL advisory lock,
because behind PgBouncer in transaction pooling a session lock is not held by anyone in
particular, and trimming is Redis work anyway. Should the holder die mid-chore, the lease
expires with the period and the next period's taker does the rest (both chores are
idempotent and resume where they stopped). The gauges are per replica and run everywhere.
A failing chore logs and tries again next period.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from bricqs.redis_connect import RedisClient
from bricqs.storage.events import purge_expired_idempotency_keys
from bricqs.stream import (
    CONSUMER_GROUP,
    chore_lease_key,
    dead_letter_key,
    historical_stream_key,
    shard_of,
    stream_key,
)
from bricqs_processor import metrics, retention
from bricqs_processor.jobs import JobRunner
from bricqs_processor.settings import ProcessorSettings
from bricqs_processor.trimming import ConsumerPruner, StreamTrimmer

log = logging.getLogger("bricqs.processor")

PURGE_CHUNK = 10_000


class Housekeeping:
    """The chores, each a method that does one round."""

    def __init__(
        self, settings: ProcessorSettings, redis: RedisClient, pool: AsyncConnectionPool[Any]
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.pool = pool
        # Each shard's live stream and the historical one of its imports.
        self.streams = [
            key(shard)
            for shard in range(settings.streams_read())
            for key in (stream_key, historical_stream_key)
        ]
        self.trimmer = StreamTrimmer(redis)
        self.pruner = ConsumerPruner(redis)
        self._holder = f"{settings.consumer()}-{uuid.uuid4().hex[:8]}"

    def tasks(self) -> list[asyncio.Task[None]]:
        """Start every chore as a background task (cancel them to stop)."""
        s = self.settings

        async def trim() -> int | None:
            return await self.in_turn("trim", s.trim_interval_ms, self.trim)

        async def purge() -> int | None:
            return await self.in_turn("purge", s.purge_interval_ms, self.purge)

        return [
            asyncio.create_task(_every(s.trim_interval_ms, trim, "trim")),
            asyncio.create_task(_every(s.purge_interval_ms, purge, "purge")),
            asyncio.create_task(_every(s.stats_interval_ms, self.refresh_gauges, "stats")),
            asyncio.create_task(JobRunner(s, self.pool, self.redis).run()),
            asyncio.create_task(
                _every(s.retention_interval_ms, retention.chore(s, self.in_turn), "retention")
            ),
        ]

    async def in_turn(
        self, chore: str, period_ms: int, run: Callable[[], Awaitable[int]]
    ) -> int | None:
        """Run `chore` if this replica takes its lease for the period; None when another
        replica holds it (it ran the chore this period, or still runs it)."""
        taken = await self.redis.set(chore_lease_key(chore), self._holder, nx=True, px=period_ms)
        if not taken:
            log.debug("%s: another replica has this period's turn", chore)
            return None
        return await run()

    async def trim(self) -> int:
        """Trim every stream below what every group acknowledged, one bounded call after
        another until a call removes nothing, and prune consumers of processes long gone;
        entries removed."""
        removed = 0
        for stream in self.streams:
            while trimmed := await self.trimmer.trim(stream):
                metrics.TRIMMED.inc(trimmed)
                removed += trimmed
            pruned = await self.pruner.prune(
                stream, CONSUMER_GROUP, self.settings.consumer_retention_ms
            )
            if pruned:
                log.info(
                    "removed %d idle consumers without pending entries from %s", pruned, stream
                )
        metrics.TRIM_ROUNDS.inc()
        if removed:
            log.debug("trimmed %d acknowledged entries", removed)
        return removed

    async def purge(self) -> int:
        """Delete expired idempotency keys, a chunk per transaction; keys deleted."""
        total = 0
        while True:
            async with (
                self.pool.connection(timeout=self.settings.database_timeout_ms / 1000) as conn,
                conn.transaction(),
            ):
                deleted = await purge_expired_idempotency_keys(conn, PURGE_CHUNK)
            total += deleted
            metrics.PURGED_KEYS.inc(deleted)
            if deleted < PURGE_CHUNK:
                break
        if total:
            log.info("purged %d expired idempotency keys", total)
        return total

    async def refresh_gauges(self) -> None:
        """Stream length, pending, group lag and dead-letter length per stream."""
        for stream in self.streams:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xlen(stream)
                pipe.xlen(dead_letter_key(shard_of(stream)))
                pipe.xinfo_groups(stream)
                length, dead, groups = await pipe.execute(raise_on_error=False)
            if isinstance(length, int):
                metrics.STREAM_LENGTH.labels(stream).set(length)
            if isinstance(dead, int) and stream == stream_key(shard_of(stream)):
                # One dead-letter stream per shard: shown once, under the live stream.
                metrics.DEAD_LETTER_LENGTH.labels(stream).set(dead)
            for group in groups if isinstance(groups, list) else []:
                name = group.get("name")
                if (name.decode() if isinstance(name, bytes) else name) != CONSUMER_GROUP:
                    continue
                metrics.PENDING.labels(stream).set(group.get("pending") or 0)
                lag = group.get("lag")
                # Redis cannot always tell the lag (after XDEL on the stream): say so.
                metrics.GROUP_LAG.labels(stream).set(float("nan") if lag is None else lag)


async def _every(interval_ms: int, chore: Callable[[], Awaitable[Any]], name: str) -> None:
    while True:
        await asyncio.sleep(interval_ms / 1000)
        try:
            await chore()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a chore never kills the process; it tries next time
            log.warning("%s failed: %s: %s", name, type(exc).__name__, exc)
