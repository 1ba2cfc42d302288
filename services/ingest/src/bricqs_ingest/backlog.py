"""Backpressure: each worker watches the unprocessed backlog in the background.

When the events not yet processed (consumer-group lag plus entries delivered but not
acknowledged, summed over the shards) pass `max_backlog`, ingest answers 503
`ingest_backpressure` instead of letting Redis run out of memory. The check runs every
`interval` seconds off the request path, so requests only read a flag: no round trip.

Each stream counts for its slowest consumer group, the processors' or any other (a
webhook dispatcher, say): the processor trims a stream only below what every group
acknowledged, so the slowest group is what holds the entries in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from prometheus_client import Gauge
from redis.exceptions import RedisError, ResponseError

from bricqs.redis_connect import RedisClient
from bricqs.stream import CONSUMER_GROUP, stream_key

log = logging.getLogger("bricqs.ingest.backlog")

BACKLOG = Gauge(
    "bricqs_ingest_backlog_events",
    "Unprocessed events (lag plus pending of each stream's slowest group) as last measured"
    " by this worker.",
    multiprocess_mode="max",
)


async def measure_backlog(redis: RedisClient, shards: int) -> int:
    """Events on the streams that their slowest consumer group has not acknowledged yet."""
    total = 0
    for shard in range(shards):
        key = stream_key(shard)
        try:
            groups: list[dict[Any, Any]] = await redis.xinfo_groups(key)
        except ResponseError:  # no such stream yet
            continue
        unprocessed = [await _unacknowledged(redis, key, group) for group in groups]
        if not any(_text(g.get("name")) == CONSUMER_GROUP for g in groups):
            # No processor has ever read it: everything is backlog.
            unprocessed.append(int(await redis.xlen(key)))
        total += max(unprocessed)
    return total


async def _unacknowledged(redis: RedisClient, stream: str, group: dict[Any, Any]) -> int:
    """Entries of `stream` the group has not read yet, plus those read and not acknowledged."""
    lag = group.get("lag")
    if lag is None:  # Redis cannot tell after some deletions: count the stream
        lag = await redis.xlen(stream)
    return int(lag) + int(group.get("pending", 0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class BacklogMonitor:
    """Keeps `over` up to date; requests read it."""

    def __init__(self, redis: RedisClient, *, shards: int, limit: int, interval: float) -> None:
        self._redis = redis
        self._shards = shards
        self._limit = limit
        self._interval = interval
        self.over = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Begin watching (no-op when the limit is 0: backpressure off)."""
        if self._limit > 0:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        """Stop watching, within a bounded time.

        The loop is asked to stop rather than cancelled: a cancellation that lands inside
        a redis-py command can be swallowed there, and awaiting the task then never ends.
        """
        if self._task is None:
            return
        self._stopping.set()
        done, _ = await asyncio.wait({self._task}, timeout=max(self._interval, 1.0) + 1.0)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1.0)

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(max(self._interval, 1.0)):
                    backlog = await measure_backlog(self._redis, self._shards)
                BACKLOG.set(backlog)
                if (backlog > self._limit) != self.over:
                    log.warning(
                        "backlog %d events: backpressure %s",
                        backlog,
                        "on" if backlog > self._limit else "off",
                    )
                self.over = backlog > self._limit
            except (RedisError, OSError, TimeoutError) as exc:
                # Redis trouble is answered by the enqueue path itself (503); keep the flag.
                log.debug("backlog check failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
