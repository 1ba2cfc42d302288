"""Storing what a reader holds: entries to transactions, retried, split or dead-lettered.

A reader's entries are decoded (the undecodable go to the dead-letter stream at once),
planned into transactions (`lanes`: a participant's entries in stream order, runs on the
process's lanes, one pooled connection each), each stored with the shared
`process_envelopes` in one PostgreSQL transaction and acknowledged after its commit.
Redelivery is harmless: storing is keyed by event_id, and mechanics run only for facts
that transaction inserted.

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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from bricqs.mechanics.cache import RuleCache
from bricqs.pipeline import process_envelopes
from bricqs.redis_connect import RedisClient
from bricqs.storage.events import StoreResult
from bricqs.storage.standings import Standings
from bricqs_processor import metrics
from bricqs_processor.backoff import Backoff
from bricqs_processor.deadletter import dead_letter
from bricqs_processor.entries import Entry, acknowledge, decode_entries, keep_claim
from bricqs_processor.failures import DATA_ERRORS, DatabaseUnavailable, Rejected, TooSlow
from bricqs_processor.lanes import Lanes, participants, plan_transactions
from bricqs_processor.lifecycle import Lifecycle
from bricqs_processor.settings import ProcessorSettings

log = logging.getLogger("bricqs.processor")


class BatchStore:
    """Stores and acknowledges the entries a consumer's readers hand it; see the module doc."""

    def __init__(
        self,
        settings: ProcessorSettings,
        redis: RedisClient,
        pool: AsyncConnectionPool[Any],
        name: str,
        rules: RuleCache,
        lifecycle: Lifecycle,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.pool = pool
        self.name = name
        self.rules = rules
        self.lifecycle = lifecycle
        self.database_ok = True
        """False from a failed transaction until one commits: readers then check that
        PostgreSQL answers before taking over other consumers' entries."""
        self._ttl = timedelta(days=settings.idempotency_retention_days)
        # Entries held this long (waiting for a lane, or between retries) are claimed
        # again, well before another consumer may take them over.
        self._claim_refresh_seconds = settings.claim_min_idle_ms / 3000
        # One pooled connection is left for housekeeping and health checks.
        self.lanes = Lanes(max(1, settings.database_pool_size - 1))

    async def store(self, entries: list[Entry]) -> None:
        """Store and acknowledge entries in hand (dead-lettering the poison among them)."""
        started = time.perf_counter()
        for start in range(0, len(entries), self.settings.batch_size):
            batch = entries[start : start + self.settings.batch_size]
            good, bad = decode_entries(batch)
            if bad:
                await self.lifecycle.until_done(
                    partial(dead_letter, self.redis, self.name, bad), "redis"
                )
            if good:
                await self._store_runs(plan_transactions(good, self.lanes.count))
        metrics.BATCH_DURATION.observe(time.perf_counter() - started)

    async def _store_runs(self, runs: list[list[list[Entry]]]) -> None:
        """Store `runs` (each a list of transactions, committed one after the other), each
        on a lane as soon as `Lanes` lets it start; runs never share a participant."""
        claimed_at = time.monotonic()
        await asyncio.gather(*(self._store_run(run, claimed_at) for run in runs))

    async def _store_run(self, run: list[list[Entry]], claimed_at: float) -> None:
        """Wait for a lane for `run`, keeping the claim on its entries meanwhile, then
        store it there."""
        lane = self.lanes.enter(participants(run))
        try:
            refresh = self._claim_refresh_seconds
            while not await lane.granted(claimed_at + refresh - time.monotonic()):
                run = await keep_claim(self.redis, self.name, run)
                claimed_at = time.monotonic()
            await self._store_all(run, claimed_at)
        finally:
            lane.release()

    async def _store_all(self, transactions: list[list[Entry]], claimed_at: float) -> None:
        """Store `transactions` in order: split parts PostgreSQL refuses or that run too
        long, retry while it is unavailable, and keep the claim on entries held for long
        (since `claimed_at`, when they were read)."""
        parts: deque[list[Entry]] = deque(transactions)
        backoff = Backoff(self.settings.backoff_initial_ms, self.settings.backoff_max_ms)
        slow_streak = 0  # single events found too slow in a row, since the last commit
        while parts:
            self.lifecycle.heartbeat.beat()
            if time.monotonic() - claimed_at > self._claim_refresh_seconds:
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
                    await self.lifecycle.until_done(
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
                self.database_ok = False
                metrics.FAILURES.labels("database").inc()
                if self.lifecycle.stopping:
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
                await self.lifecycle.sleep(delay)
                parts = deque(await keep_claim(self.redis, self.name, list(parts)))
                claimed_at = time.monotonic()
                slow_streak = 0
                continue
            self.database_ok = True
            backoff.reset()
            slow_streak = 0
            parts.popleft()
            await self.lifecycle.until_done(partial(acknowledge, self.redis, part), "redis")
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


def _halves(part: list[Entry]) -> list[list[Entry]]:
    """The two halves of a part, ordered for `deque.extendleft` (first half first)."""
    middle = len(part) // 2
    return [part[middle:], part[:middle]]
