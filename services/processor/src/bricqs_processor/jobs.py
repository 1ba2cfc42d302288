"""The backfill job runner, a housekeeping chore of every processor replica.

A runner claims the oldest open job whose lease is free (SKIP LOCKED, so replicas take
different jobs), then applies it a chunk of participants per transaction, in id order:
the chunk's outcomes, the job's cursor and counts, and a longer lease commit together.
Each chunk first locks the job's row and checks the lease is still its own, so after a
crash (or a lease that ran out) the next runner resumes after the last committed chunk
and no chunk is ever applied twice. Why here and not in the api: docs/backfill.md.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from bricqs.mechanics.backfill import Target, apply_chunk, plan_chunk, tally
from bricqs.mechanics.cache import RuleCache, decode_definition
from bricqs.mechanics.definitions import Badge, Challenge
from bricqs.redis_connect import RedisClient
from bricqs.storage.definitions import get_definition
from bricqs.storage.jobs import advance_job, claim_job, finish_job, hold_job
from bricqs.storage.participants import participants_after
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Conn
from bricqs_processor.settings import ProcessorSettings

log = logging.getLogger("bricqs.processor.jobs")

Clock = Callable[[], datetime]
TRANSIENT = (psycopg.OperationalError, OSError)
"""Failures that leave a job to be resumed, not failed: PostgreSQL unreachable or slow."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class JobRunner:
    """Works through backfill jobs, one chunk per transaction."""

    def __init__(
        self,
        settings: ProcessorSettings,
        pool: AsyncConnectionPool[Any],
        redis: RedisClient | None,
        *,
        clock: Clock = _utc_now,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.standings = Standings(redis) if redis is not None else None
        self.rules = RuleCache(settings.rules_refresh_seconds)
        self.clock = clock
        self.owner = f"{settings.consumer()}-{uuid.uuid4().hex[:8]}"
        self._lease = timedelta(milliseconds=settings.jobs_lease_ms)

    async def run(self) -> None:
        """Look for work every JOBS_POLL_MS; a job is worked until done or its lease lost."""
        while True:
            try:
                worked = await self.run_once()
            except Exception as exc:  # the runner never dies; a job keeps cursor and lease
                log.warning("backfill runner: %s: %s", type(exc).__name__, exc)
                worked = None
            if worked is None:
                await asyncio.sleep(self.settings.jobs_poll_ms / 1000)

    async def run_once(self, max_chunks: int | None = None) -> str | None:
        """Claim a job and apply its chunks until it ends, its lease is lost, or after
        `max_chunks`; the job's id, or None when no job was due."""
        now = self.clock()
        async with self._transaction() as conn:
            job = await claim_job(
                conn,
                owner=self.owner,
                now=now,
                lease_until=now + self._lease,
                created_before=now - timedelta(milliseconds=self.settings.jobs_settle_ms),
            )
        if job is None:
            return None
        log.info("backfill %s of %s %s: from %s", job.job_id, job.kind, job.code, job.cursor)
        chunks = 0
        while max_chunks is None or chunks < max_chunks:
            try:
                if not await self.apply_next_chunk(job.job_id):
                    break
            except Exception as exc:
                if isinstance(exc, TRANSIENT):
                    raise  # the lease runs out and the job is taken up again where it was
                # A bug or bad data: the job stops, saying why (it can be asked for again).
                log.exception("backfill %s failed", job.job_id)
                async with self._transaction() as conn:
                    await finish_job(conn, job.job_id, error=f"{type(exc).__name__}: {exc}")
                break
            chunks += 1
        return job.job_id

    async def apply_next_chunk(self, job_id: str) -> bool:
        """Apply the chunk after the job's cursor; False when there is nothing more to do
        (the job ended, or the lease is no longer this runner's)."""
        now = self.clock()
        async with self._transaction() as conn:
            job = await hold_job(conn, job_id, owner=self.owner, now=now)
            if job is None:
                log.info("backfill %s: lease lost, another runner goes on", job_id)
                return False
            tenant = job.tenant
            row = await get_definition(conn, tenant, job.kind, job.code)
            if row is None or row.version != job.definition_version or row.status != "active":
                await finish_job(
                    conn, job_id, error="the definition changed or is no longer active"
                )
                return False
            participants = await participants_after(
                conn, tenant, job.cursor, self.settings.jobs_chunk_size
            )
            if not participants:
                await finish_job(conn, job_id)
                log.info("backfill %s done: %s", job_id, job.outcomes)
                return False
            definition = decode_definition(row)
            assert isinstance(definition, Badge | Challenge)
            target = Target.of(definition)
            if job.dry_run:  # counted as the dry run's answer counts, nothing written
                outcomes = tally(await plan_chunk(conn, tenant, target, participants))
            else:
                outcomes = await apply_chunk(
                    conn,
                    tenant,
                    target,
                    participants,
                    rules_for=self.rules,
                    origin=job_id,
                    notify=job.notify,
                    standings=self.standings,
                )
            await advance_job(
                conn,
                job,
                cursor=participants[-1],
                done=len(participants),
                outcomes=outcomes.as_dict(),
                lease_until=now + self._lease,
            )
        return True

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Conn]:
        async with (
            self.pool.connection(timeout=self.settings.database_timeout_ms / 1000) as conn,
            conn.transaction(),
        ):
            yield conn
