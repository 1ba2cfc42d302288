"""Periodic chores beside the consumer loop: trimming, purging, refreshing gauges.

Every replica runs them; they are idempotent, so doing them N times costs a little and
breaks nothing. A failing chore logs and tries again next period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from bricqs.storage.events import purge_expired_idempotency_keys
from bricqs.stream import CONSUMER_GROUP, dead_letter_key, shard_of, stream_key
from bricqs_processor import metrics
from bricqs_processor.settings import ProcessorSettings
from bricqs_processor.trimming import ConsumerPruner, StreamTrimmer

log = logging.getLogger("bricqs.processor")

PURGE_CHUNK = 10_000


class Housekeeping:
    """The chores, each a method that does one round."""

    def __init__(
        self, settings: ProcessorSettings, redis: Redis, pool: AsyncConnectionPool[Any]
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.pool = pool
        self.streams = [stream_key(shard) for shard in range(settings.stream_shards)]
        self.trimmer = StreamTrimmer(redis)
        self.pruner = ConsumerPruner(redis)

    def tasks(self) -> list[asyncio.Task[None]]:
        """Start every chore as a background task (cancel them to stop)."""
        s = self.settings
        return [
            asyncio.create_task(_every(s.trim_interval_ms, self.trim, "trim")),
            asyncio.create_task(_every(s.purge_interval_ms, self.purge, "purge")),
            asyncio.create_task(_every(s.stats_interval_ms, self.refresh_gauges, "stats")),
        ]

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
            if isinstance(dead, int):
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
