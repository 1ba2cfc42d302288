"""The stream consumer: read a batch, store it in one transaction, acknowledge it.

One reader per shard in each process, each with one batch in hand at a time (and one
import reader per shard, for its historical stream, which reads only while the live one
has room: see `priority`):

1. every `RECLAIM_INTERVAL_MS`, reclaim entries of its shard that other (dead) consumers
   left pending longer than `CLAIM_MIN_IDLE_MS` (see `recovery`) and process them like a
   read;
2. `XREADGROUP >` on its shard's stream, `COUNT` and `BLOCK` (one stream per command: in
   Redis Cluster shards live on different nodes, and a command may touch one slot only);
3. decode; an undecodable entry goes to the dead-letter stream at once;
4. store the envelopes, their facts and their mechanics effects in PostgreSQL
   transactions and `XACK` after each commit (`storing`).

How a failure while storing is handled (retried, split, dead-lettered) is `storing`'s.

Entries in hand are bounded over all shards: each reader holds at most its share of
`BATCH_SIZE` (`per_shard_count`), as two reads of half of it (one being stored while the
next is read, and only while its reads come back full), so a process never holds more
than about BATCH_SIZE live entries however many shards it reads (imports add at most
HISTORICAL_BATCH_SIZE per shard). Every read's transactions share the process's
`DATABASE_POOL_SIZE - 1` lanes (`lanes.Lanes`); a transaction waiting for one keeps the
claim on its entries fresh, so no claim ages out while earlier ones are stored.
Storing what several readers hold as one larger batch was tried and did not pay: one
processor with 20 rules drained 8 shards as fast either way, and faster than 1 shard,
since a reader reads while the others store. Reading ahead on one shard does the same:
+3% events/s with 20 rules (6 alternating drains: 7,392 -> 7,628 median), the next
read's transactions starting as each lane of the previous read commits.

Every replica reads every shard (its live streams, historical ones or both, as
PROCESSOR_STREAMS says) through the consumer group, with no coordinator: the
group hands each entry to one consumer, a replica that joins or dies changes nothing but
who reads next (XAUTOCLAIM takes over what a dead one held), and no shard waits for a
lease to expire.

SIGTERM (`stop()`) ends intake: a read in flight returns within `BLOCK_MS`, the batch in
hand is committed and acknowledged, then `run()` returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool
from redis.exceptions import ResponseError

from bricqs.mechanics.cache import RuleCache
from bricqs.redis_connect import REDIS_ERRORS, RedisClient
from bricqs.storage.health import ping
from bricqs.stream import CONSUMER_GROUP, historical_stream_key, shard_of, stream_key
from bricqs_processor import metrics
from bricqs_processor.backoff import Backoff
from bricqs_processor.deadletter import dead_letter
from bricqs_processor.entries import Entry, entries_from_reply
from bricqs_processor.lifecycle import Lifecycle
from bricqs_processor.liveness import Heartbeat
from bricqs_processor.priority import ImportGate, ImportPriority
from bricqs_processor.recovery import reclaim_stuck
from bricqs_processor.settings import ProcessorSettings
from bricqs_processor.storing import BatchStore

log = logging.getLogger("bricqs.processor")

T = TypeVar("T")

# Reclaimed entries delivered more often than this are processed one at a time.
SUSPECT_DELIVERIES = 2


def per_shard_count(batch_size: int, shards: int) -> int:
    """Most entries one shard's reader reads at once: its share of BATCH_SIZE, so the
    entries in hand over all shards stay within BATCH_SIZE (at least one per shard)."""
    return max(1, batch_size // shards)


class StreamConsumer:
    """Consumes every shard's stream through the consumer group; see the module doc."""

    def __init__(
        self, settings: ProcessorSettings, redis: RedisClient, pool: AsyncConnectionPool[Any]
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.pool = pool
        self.name = settings.consumer()
        self.streams = [stream_key(shard) for shard in range(settings.streams_read())]
        self.rules = RuleCache(settings.rules_refresh_seconds)
        self.heartbeat = Heartbeat(settings.heartbeat_bound_seconds())
        self.lifecycle = Lifecycle(settings, self.heartbeat)
        self.store = BatchStore(settings, redis, pool, self.name, self.rules, self.lifecycle)
        # Half its share per read: while reads come back full, one read is stored while
        # the next is read (`_read_shard`), so a reader holds at most its share.
        share = per_shard_count(settings.batch_size, len(self.streams))
        self._read_count = max(1, share // 2)
        self._reads_ahead = share >= 2
        # One historical batch at a time over all shards: imports never hold more than
        # one of those connections, nor, resting between batches, half the process.
        self._importing = asyncio.Semaphore(1)

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        """Stop intake; the batch in hand is finished, then `run()` returns."""
        self.lifecycle.stop()

    @property
    def stopping(self) -> bool:
        """Whether `stop()` was called."""
        return self.lifecycle.stopping

    async def run(self) -> None:
        """Consume until `stop()`: one reader per shard."""
        log.info("consumer %s reading %d stream(s)", self.name, len(self.streams))
        await self.lifecycle.until_done(self.ensure_groups, "redis")
        async with asyncio.TaskGroup() as readers:
            for stream in self.streams:
                gate = ImportGate()
                if self.settings.reads_live():
                    readers.create_task(self._read_shard(stream, gate))
                else:
                    gate.without_live_reader()
                if self.settings.reads_historical():
                    readers.create_task(self._import_shard(stream, gate))
        log.info("consumer %s stopped", self.name)

    async def _read_shard(self, stream: str, gate: ImportGate) -> None:
        """Read, store and acknowledge one shard's live entries until `stop()`, opening
        `gate` for its import reader while there is room (`priority`).

        A read that came back full (a backlog) is stored while the next one is read and
        its transactions queued behind it (`lanes.Lanes`), so PostgreSQL is not idle while
        a read is decoded, nor waiting for a read's slowest lane; the reader then waits
        for the earlier read to be stored, so it holds at most two reads (its share)."""
        backoff = Backoff(self.settings.backoff_initial_ms, self.settings.backoff_max_ms)
        next_reclaim = 0.0
        reclaimed = self._streams_reclaimed(stream)
        storing: asyncio.Task[None] | None = None  # a full read, stored while reading on
        try:
            while not self.stopping:
                self.heartbeat.beat()
                due = await self._reclaim_when_due(stream, backoff, reclaimed, next_reclaim)
                if due is None:
                    continue
                next_reclaim = due
                read = partial(self._read, stream, block=self.settings.block_ms)
                entries = await self._guarded(stream, backoff, read)
                if entries is None:
                    continue
                gate.after_live_read(len(entries), self._read_count)
                if entries:
                    previous, storing = storing, asyncio.create_task(self.process(entries))
                    if previous is not None:
                        await previous
                    if self._reads_ahead and len(entries) == self._read_count:
                        continue  # a backlog: read on while this read is stored
                if storing is not None:
                    await storing
                    storing = None
                gate.after_live_stored()
            if storing is not None:
                await storing
        finally:
            if storing is not None and not storing.done():
                storing.cancel()

    async def _import_shard(self, stream: str, gate: ImportGate) -> None:
        """Read, store and acknowledge one shard's historical entries until `stop()`, a
        few at a time, while its live reader has room (`priority`)."""
        historical = historical_stream_key(shard_of(stream))
        priority = ImportPriority(
            self.settings.historical_batch_size,
            self.settings.historical_poll_ms / 1000,
            self.settings.historical_rest_ratio,
        )
        backoff = Backoff(self.settings.backoff_initial_ms, self.settings.backoff_max_ms)
        bound = self.settings.block_ms / 1000  # how often a wait looks at `stopping`
        # Without a live reader in this replica, the import reader reclaims its stream
        # and keeps the liveness heartbeat.
        alone = not self.settings.reads_live()
        next_reclaim = 0.0
        while not self.stopping:
            if alone:
                self.heartbeat.beat()
                due = await self._reclaim_when_due(stream, backoff, [historical], next_reclaim)
                if due is None:
                    continue
                next_reclaim = due
            if (wait := priority.wait_seconds()) > 0:
                await self.lifecycle.sleep(min(wait, bound))
                continue
            try:
                async with asyncio.timeout(bound):
                    await gate.opened()
            except TimeoutError:
                continue
            read = partial(self._read, historical, count=priority.batch_size)
            entries = await self._guarded(stream, backoff, read)
            if entries is None:
                continue
            priority.found(len(entries))
            if entries:
                async with self._importing:
                    started = time.monotonic()
                    await self.process(entries)
                    priority.stored(time.monotonic() - started)

    async def _guarded(
        self, stream: str, backoff: Backoff, action: Callable[[], Awaitable[T]]
    ) -> T | None:
        """Run one Redis step of the reader of `stream`'s shard: None when Redis failed
        (after backing off) or a consumer group had to be made again."""
        try:
            result = await action()
        except ResponseError as exc:
            if str(exc).startswith("NOGROUP"):
                # A stream or group vanished (deleted by an operator): recreate.
                log.warning("consumer group missing, recreating: %s", exc)
                await self.lifecycle.until_done(partial(self._ensure_shard_groups, stream), "redis")
                return None
            await self._redis_failed(backoff, exc)
            return None
        except REDIS_ERRORS as exc:
            await self._redis_failed(backoff, exc)
            return None
        backoff.reset()
        return result

    async def _redis_failed(self, backoff: Backoff, exc: Exception) -> None:
        metrics.FAILURES.labels("redis").inc()
        delay = backoff.next_delay()
        log.warning("redis unavailable (%s); retrying in %.2f s", exc, delay)
        await self.lifecycle.sleep(delay)

    async def ensure_groups(self) -> None:
        """Create the consumer group on every stream (and the stream), if missing, and
        register this consumer in it, so it is listed before its first entry arrives.

        The group starts at id 0, so entries added before the first processor ran are
        consumed too.
        """
        for stream in self.streams:
            await self._ensure_shard_groups(stream)

    async def _ensure_shard_groups(self, stream: str) -> None:
        await self._ensure_group(stream)
        await self._ensure_group(historical_stream_key(shard_of(stream)))

    async def _ensure_group(self, stream: str) -> None:
        try:
            await self.redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        await self.redis.xgroup_createconsumer(stream, CONSUMER_GROUP, self.name)

    # -- reading -----------------------------------------------------------------------

    async def _read(
        self, stream: str, *, count: int | None = None, block: int | None = None
    ) -> list[Entry]:
        """New entries of `stream`: at most `count` (default: this reader's share of
        BATCH_SIZE), waiting up to `block` ms for some (None: not at all)."""
        reply: Any = await self.redis.xreadgroup(
            CONSUMER_GROUP, self.name, {stream: ">"}, count=count or self._read_count, block=block
        )
        entries: list[Entry] = []
        for stream, items in reply or []:
            found, _deleted = entries_from_reply(stream, items)
            entries.extend(found)
        return entries

    async def _reclaim_when_due(
        self, stream: str, backoff: Backoff, streams: list[str], due: float
    ) -> float | None:
        """Reclaim what dead consumers left on `streams` (of `stream`'s shard) once `due`
        has passed: when the next round is due, or None when Redis failed."""
        if time.monotonic() < due:
            return due
        if not await self._guarded(stream, backoff, partial(self._reclaim, streams)):
            return None
        self.heartbeat.beat()
        return time.monotonic() + self.settings.reclaim_interval_ms / 1000

    def _streams_reclaimed(self, stream: str) -> list[str]:
        """The streams of `stream`'s shard whose reader reclaims what dead consumers left:
        the live one, and the historical one too when this replica reads both."""
        if self.settings.reads_historical():
            return [stream, historical_stream_key(shard_of(stream))]
        return [stream]

    async def _reclaim(self, streams: list[str]) -> bool:
        """Reclaim and store what dead consumers left pending on `streams`, in order;
        True once done."""
        for name in streams:
            if not self.store.database_ok and not await self._database_answers():
                return True  # taking over entries we cannot store would only age them
            await self._reclaim_stream(name)
            if self.stopping:
                return True
        metrics.RECLAIM_ROUNDS.inc()
        return True

    async def _reclaim_stream(self, stream: str) -> None:
        async for claimed in reclaim_stuck(
            self.redis,
            stream,
            self.name,
            min_idle_ms=self.settings.claim_min_idle_ms,
            count=self._read_count,
        ):
            self.heartbeat.beat()
            limit = self.settings.max_deliveries
            over = [e for e in claimed if (e.deliveries or 0) > limit]
            rest = [e for e in claimed if (e.deliveries or 0) <= limit]
            if over:
                reasons = [
                    (e, f"max_deliveries: delivered {e.deliveries} times, more than {limit}")
                    for e in over
                ]
                await self.lifecycle.until_done(
                    partial(dead_letter, self.redis, self.name, reasons), "redis"
                )
            # An entry delivered more than twice may be what killed its consumers
            # (a crash is no exception we can catch): process such entries one by
            # one, so only that one climbs to the dead-letter stream.
            fresh = [e for e in rest if (e.deliveries or 0) <= SUSPECT_DELIVERIES]
            if fresh:
                await self.process(fresh)
            for entry in rest:
                if (entry.deliveries or 0) > SUSPECT_DELIVERIES and not self.stopping:
                    await self.process([entry])
            if self.stopping:
                return

    async def _database_answers(self) -> bool:
        try:
            async with self.pool.connection(timeout=self.settings.database_timeout_ms / 1000) as c:
                await ping(c)
        except psycopg.Error:
            return False
        self.store.database_ok = True
        return True

    # -- storing ------------------------------------------------------------------------

    async def process(self, entries: list[Entry]) -> None:
        """Store and acknowledge entries in hand (`storing`)."""
        await self.store.store(entries)
