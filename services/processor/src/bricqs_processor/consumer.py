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
4. store the envelopes, their facts and their mechanics effects with the shared
   `process_envelopes` in one PostgreSQL transaction; `XACK` after the commit.
   Redelivery is harmless: storing is keyed by event_id, and mechanics run only for
   facts that transaction inserted.

Failures are sorted by what they mean:
- PostgreSQL unreachable (connection lost, pool timeout, server errors that are not
  about the data): nothing is acknowledged; the batch in hand is
  retried after a capped exponential backoff, for as long as it takes. Before each retry
  the consumer re-claims its entries, which resets their idle time without counting a
  delivery, so no other consumer takes them over and the outage never pushes them
  towards the dead-letter stream.
- PostgreSQL refuses the data (DataError, IntegrityError), or our code fails on it (any
  other exception: a rule that cannot handle a property, say): the batch is split in
  halves and each half retried, down to the single event, which goes to the dead-letter
  stream with the error; its neighbours are stored.
- The batch runs past `BATCH_TIMEOUT_MS` (or a statement past `STATEMENT_TIMEOUT_MS`):
  it is cancelled and split the same way, but a single event that is still too slow is
  retried like an outage, never dead-lettered: slowness is the database's state.
- Redis unreachable: back off and retry; an acknowledgement that fails after a commit
  is retried too, and if it never lands the entry is redelivered and found stored.

Entries in hand are bounded over all shards: each reader reads at most its share of
`BATCH_SIZE` (`per_shard_count`), so a process never holds more than about BATCH_SIZE
live entries however many shards it reads (imports add at most HISTORICAL_BATCH_SIZE per
shard), and at most `DATABASE_POOL_SIZE - 1` readers store at
once; the rest wait with small batches, so no claim ages out while earlier ones are stored.
Storing what several readers hold as one larger batch was tried and did not pay: one
processor with 20 rules drained 8 shards as fast either way, and faster than 1 shard,
since a reader reads while the others store.

Every replica reads every shard through the consumer group, with no coordinator: the
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
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool
from redis.exceptions import ResponseError

from bricqs.mechanics.cache import RuleCache
from bricqs.pipeline import process_envelopes
from bricqs.redis_connect import REDIS_ERRORS, RedisClient
from bricqs.storage.events import StoreResult
from bricqs.storage.health import ping
from bricqs.storage.standings import Standings
from bricqs.stream import CONSUMER_GROUP, historical_stream_key, shard_of, stream_key
from bricqs_processor import metrics
from bricqs_processor.backoff import Backoff
from bricqs_processor.deadletter import dead_letter
from bricqs_processor.entries import (
    Entry,
    acknowledge,
    decode_entries,
    entries_from_reply,
    keep_claim,
)
from bricqs_processor.failures import DATA_ERRORS, DatabaseUnavailable, Rejected, TooSlow
from bricqs_processor.lanes import plan_transactions
from bricqs_processor.liveness import Heartbeat
from bricqs_processor.priority import ImportGate, ImportPriority
from bricqs_processor.recovery import reclaim_stuck
from bricqs_processor.settings import ProcessorSettings

log = logging.getLogger("bricqs.processor")

T = TypeVar("T")

# Reclaimed entries delivered more often than this are processed one at a time.
SUSPECT_DELIVERIES = 2

# Once stopping, a Redis write (XACK, dead letter) is tried this often before giving up;
# what is left unacknowledged is redelivered to another consumer and found stored.
SHUTDOWN_ATTEMPTS = 3


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
        self._stopping = asyncio.Event()
        self._ttl = timedelta(days=settings.idempotency_retention_days)
        self.rules = RuleCache(settings.rules_refresh_seconds)
        self.heartbeat = Heartbeat(settings.heartbeat_bound_seconds())
        self._database_ok = True
        self._read_count = per_shard_count(settings.batch_size, len(self.streams))
        # Readers storing at once: each batch's lanes take pooled connections, and one
        # connection is left for housekeeping and health checks.
        self._storing = asyncio.Semaphore(max(1, settings.database_pool_size - 1))
        # One historical batch at a time over all shards: imports never hold more than
        # one of those connections, nor, resting between batches, half the process.
        self._importing = asyncio.Semaphore(1)

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        """Stop intake; the batch in hand is finished, then `run()` returns."""
        if not self._stopping.is_set():
            log.info("stopping: finishing the batch in hand")
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether `stop()` was called."""
        return self._stopping.is_set()

    async def run(self) -> None:
        """Consume until `stop()`: one reader per shard."""
        log.info("consumer %s reading %d stream(s)", self.name, len(self.streams))
        await self._until_done(self.ensure_groups, "redis")
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
        `gate` for its import reader while there is room (`priority`)."""
        backoff = Backoff(self.settings.backoff_initial_ms, self.settings.backoff_max_ms)
        next_reclaim = 0.0
        reclaimed = self._streams_reclaimed(stream)
        while not self.stopping:
            self.heartbeat.beat()
            if time.monotonic() >= next_reclaim:
                if not await self._guarded(stream, backoff, partial(self._reclaim, reclaimed)):
                    continue
                next_reclaim = time.monotonic() + self.settings.reclaim_interval_ms / 1000
                self.heartbeat.beat()
            read = partial(self._read, stream, block=self.settings.block_ms)
            entries = await self._guarded(stream, backoff, read)
            if entries is None:
                continue
            gate.after_live_read(len(entries), self._read_count)
            if entries:
                async with self._storing:
                    await self.process(entries)
            gate.after_live_stored()

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
                if time.monotonic() >= next_reclaim:
                    reclaim = partial(self._reclaim, [historical])
                    if not await self._guarded(stream, backoff, reclaim):
                        continue
                    next_reclaim = time.monotonic() + self.settings.reclaim_interval_ms / 1000
            if (wait := priority.wait_seconds()) > 0:
                await self._sleep(min(wait, bound))
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
                async with self._importing, self._storing:
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
                await self._until_done(partial(self._ensure_shard_groups, stream), "redis")
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
        await self._sleep(delay)

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
            if not self._database_ok and not await self._database_answers():
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
                await self._until_done(
                    partial(dead_letter, self.redis, self.name, reasons), "redis"
                )
            # An entry delivered more than twice may be what killed its consumers
            # (a crash is no exception we can catch): process such entries one by
            # one, so only that one climbs to the dead-letter stream.
            fresh = [e for e in rest if (e.deliveries or 0) <= SUSPECT_DELIVERIES]
            async with self._storing:
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
        self._database_ok = True
        return True

    # -- processing --------------------------------------------------------------------

    async def process(self, entries: list[Entry]) -> None:
        """Store and acknowledge entries in hand (dead-lettering the poison among them)."""
        started = time.perf_counter()
        for start in range(0, len(entries), self.settings.batch_size):
            batch = entries[start : start + self.settings.batch_size]
            good, bad = decode_entries(batch)
            if bad:
                await self._until_done(partial(dead_letter, self.redis, self.name, bad), "redis")
            if good:
                await self._store_runs(
                    plan_transactions(good, self.settings.database_pool_size - 1)
                )
        metrics.BATCH_DURATION.observe(time.perf_counter() - started)

    async def _store_runs(self, runs: list[list[list[Entry]]]) -> None:
        """Store `runs` (each a list of transactions, committed one after the other) on
        as many connections at once as lanes allow; runs never share a participant."""
        claimed_at = time.monotonic()
        if len(runs) == 1:
            await self._store_all(runs[0], claimed_at)
            return
        waiting = deque(runs)

        async def lane() -> None:
            while waiting:
                await self._store_all(waiting.popleft(), claimed_at)

        lanes = max(1, self.settings.database_pool_size - 1)
        await asyncio.gather(*(lane() for _ in range(min(lanes, len(runs)))))

    async def _store_all(self, transactions: list[list[Entry]], claimed_at: float) -> None:
        """Store `transactions` in order: split parts PostgreSQL refuses or that run too
        long, retry while it is unavailable, and keep the claim on entries held for long
        (since `claimed_at`, when they were read)."""
        parts: deque[list[Entry]] = deque(transactions)
        backoff = Backoff(self.settings.backoff_initial_ms, self.settings.backoff_max_ms)
        refresh_after = self.settings.claim_min_idle_ms / 3000
        slow_streak = 0  # single events found too slow in a row, since the last commit
        while parts:
            self.heartbeat.beat()
            if time.monotonic() - claimed_at > refresh_after:
                parts = deque(await keep_claim(self.redis, self.name, list(parts)))
                claimed_at = time.monotonic()
                continue
            part = parts[0]
            try:
                result = await self._transaction(part)
            except Rejected as exc:
                parts.popleft()
                if len(part) == 1:
                    reasons = [(part[0], f"rejected: {exc}")]
                    await self._until_done(
                        partial(dead_letter, self.redis, self.name, reasons), "redis"
                    )
                else:
                    parts.extendleft(_halves(part))
                continue
            except (TooSlow, DatabaseUnavailable) as exc:
                if isinstance(exc, TooSlow):
                    if len(part) > 1:
                        log.warning("a batch of %d was too slow (%s); splitting", len(part), exc)
                        parts.popleft()
                        parts.extendleft(_halves(part))
                        continue
                    if slow_streak < len(parts) - 1:
                        # One slow event (waiting on a lock, say): let the rest through.
                        parts.rotate(-1)
                        slow_streak += 1
                        continue
                # Never the events' fault, so never a reason to dead-letter them.
                self._database_ok = False
                metrics.FAILURES.labels("database").inc()
                if self.stopping:
                    left = sum(len(p) for p in parts)
                    log.warning(
                        "database unavailable at shutdown; %d entries stay pending for"
                        " another consumer: %s",
                        left,
                        exc,
                    )
                    return
                delay = backoff.next_delay()
                log.warning("batch not committed (%s); retrying in %.2f s", exc, delay)
                await self._sleep(delay)
                parts = deque(await keep_claim(self.redis, self.name, list(parts)))
                claimed_at = time.monotonic()
                slow_streak = 0
                continue
            self._database_ok = True
            backoff.reset()
            slow_streak = 0
            parts.popleft()
            await self._until_done(partial(acknowledge, self.redis, part), "redis")
            metrics.observe_stored(part, result)

    async def _transaction(self, part: Sequence[Entry]) -> StoreResult:
        """One batch transaction; raises Rejected, TooSlow or DatabaseUnavailable."""
        envelopes = [e.envelope for e in part if e.envelope is not None]
        try:
            async with self.pool.connection(timeout=self.settings.database_timeout_ms / 1000) as c:
                started = time.perf_counter()
                # On expiry psycopg cancels the running query in the server, and the
                # transaction is rolled back.
                async with asyncio.timeout(self.settings.batch_timeout_ms / 1000), c.transaction():
                    processed = await process_envelopes(
                        c,
                        envelopes,
                        idempotency_ttl=self._ttl,
                        rules_for=self.rules,
                        report=False,
                        standings=Standings(self.redis),
                    )
                metrics.DATABASE_DURATION.observe(time.perf_counter() - started)
                return processed.stored
        except TimeoutError as exc:
            raise TooSlow(f"no commit within {self.settings.batch_timeout_ms} ms") from exc
        except psycopg.errors.QueryCanceled as exc:
            raise TooSlow(f"{type(exc).__name__}: {exc}") from exc
        except DATA_ERRORS as exc:
            raise Rejected(f"{type(exc).__name__}: {exc}") from exc
        except psycopg.Error as exc:
            # Connection errors, pool timeouts, and server-side errors that are not about
            # the data (a missing table before migrations ran, say).
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # our code failed on this data: isolate it like poison
            log.warning("batch of %d failed in processing code", len(part), exc_info=True)
            raise Rejected(f"{type(exc).__name__}: {exc}") from exc

    # -- helpers -----------------------------------------------------------------------

    async def _until_done(self, action: Callable[[], Awaitable[T]], dependency: str) -> T | None:
        """Run `action` until it succeeds, backing off on Redis errors.

        Gives up (returning None) when the consumer group is gone, since there is then
        nothing left to acknowledge, or after a few attempts once stopping.
        """
        backoff = Backoff(self.settings.backoff_initial_ms, self.settings.backoff_max_ms)
        attempts = 0
        while True:
            self.heartbeat.beat()
            try:
                return await action()
            except REDIS_ERRORS as exc:
                if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
                    log.warning("consumer group gone; dropping what was in hand: %s", exc)
                    return None
                metrics.FAILURES.labels(dependency).inc()
                attempts += 1
                if self.stopping and attempts >= SHUTDOWN_ATTEMPTS:
                    log.warning("giving up at shutdown after %d failures: %s", attempts, exc)
                    return None
                delay = backoff.next_delay()
                log.warning("%s unavailable (%s); retrying in %.2f s", dependency, exc, delay)
                if self.stopping:
                    await asyncio.sleep(delay)
                else:
                    await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up early when stopping."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass


def _halves(part: list[Entry]) -> list[list[Entry]]:
    """The two halves of a part, ordered for `deque.extendleft` (first half first)."""
    middle = len(part) // 2
    return [part[middle:], part[:middle]]
