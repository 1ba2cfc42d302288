"""Backpressure: each worker watches the unprocessed backlog in the background.

When the events not yet processed (consumer-group lag plus entries delivered but not
acknowledged, summed over the shards) pass `max_backlog`, ingest answers 503
`ingest_backpressure` instead of letting Redis run out of memory. The check runs every
`interval` seconds off the request path, so requests only read a flag: no round trip.

While STREAM_SHARDS changes (`previous_shards` set), the flag is also up until the
streams of the previous mapping hold nothing unacknowledged: a participant's events move
to another shard only once its earlier ones are stored, so its order is kept and no
entry waits in a stream the new mapping forgets (docs/resharding.md). Then the flag
follows the backlog alone: the old streams only shrink once every worker uses the new
mapping.

Historical imports (docs/import.md) have streams of their own, measured apart against
their own bound: an import in progress slows imports, never live events.

Each stream counts for its slowest consumer group, the processors' or any other (a
webhook dispatcher, say): the processor trims a stream only below what every group
acknowledged, so the slowest group is what holds the entries in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import Gauge
from redis.exceptions import RedisError, ResponseError

from bricqs.redis_connect import RedisClient
from bricqs.stream import CONSUMER_GROUP, historical_stream_key, stream_key

log = logging.getLogger("bricqs.ingest.backlog")

BACKLOG = Gauge(
    "bricqs_ingest_backlog_events",
    "Unprocessed events (lag plus pending of each stream's slowest group) as last measured"
    " by this worker.",
    multiprocess_mode="max",
)


async def measure_backlog(
    redis: RedisClient, shards: int, stream_of: Callable[[int], str] = stream_key
) -> int:
    """Events on the streams (`stream_of` each shard: the live ones by default) that their
    slowest consumer group has not acknowledged yet."""
    total = 0
    for shard in range(shards):
        key = stream_of(shard)
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

    def __init__(
        self,
        redis: RedisClient,
        *,
        shards: int,
        limit: int,
        interval: float,
        previous_shards: int = 0,
        historical_limit: int = 0,
    ) -> None:
        self._redis = redis
        self._shards = shards
        self._limit = limit
        self._interval = interval
        self._previous = previous_shards
        self._draining = previous_shards > 0
        self.over = self._draining
        self._historical_limit = historical_limit
        self.historical_over = False
        """Whether the historical streams' backlog passed its own bound (imports wait)."""
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Begin watching (no-op when the limit is 0, backpressure off, and no change of
        STREAM_SHARDS is under way)."""
        if self._limit > 0 or self._draining or self._historical_limit > 0:
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

    async def _check_drained(self) -> None:
        left = await measure_backlog(self._redis, self._previous)
        if left == 0:
            self._draining = False
            log.warning(
                "the streams of %d shards are drained: queueing on %d shards",
                self._previous,
                self._shards,
            )
        else:
            log.info("holding intake until %d events of the previous shards are stored", left)

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(max(self._interval, 1.0)):
                    if self._draining:
                        await self._check_drained()
                    backlog = await measure_backlog(self._redis, self._shards)
                    imports = (
                        await measure_backlog(self._redis, self._shards, historical_stream_key)
                        if self._historical_limit > 0
                        else 0
                    )
                BACKLOG.set(backlog)
                if not self._draining and (0 < self._limit < backlog) != self.over:
                    log.warning(
                        "backlog %d events: backpressure %s",
                        backlog,
                        "on" if backlog > self._limit else "off",
                    )
                self.over = self._draining or 0 < self._limit < backlog
                self.historical_over = 0 < self._historical_limit < imports
            except (RedisError, OSError, TimeoutError) as exc:
                # Redis trouble is answered by the enqueue path itself (503); keep the flag.
                log.debug("backlog check failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
