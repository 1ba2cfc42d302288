"""The delivery loop: claim due messages, send each as its own task, record the results.

Each round records the attempts finished since the last one and claims as many due
messages as there is room for, in one transaction. Attempts run concurrently, at most
MAX_IN_FLIGHT in this replica and MAX_IN_FLIGHT_PER_ENDPOINT per endpoint across every
replica (the claim counts the endpoint's leases in PostgreSQL), so a slow endpoint holds
only its own share; a round starts when an attempt ends (after waiting up to
GATHER_SECONDS for the others in flight, to record them together), or every
POLL_INTERVAL_MS when idle.

Time comes from an injectable clock (schedules, leases, timestamps), so tests advance it
instead of waiting hours for a retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from bricqs.ids import ulid
from bricqs.storage.webhook_outbox import (
    Attempt,
    DueMessage,
    backlog,
    claim_due,
    disable_endpoint,
    purge_finished,
    record_attempts,
    sweep_orphans,
)
from bricqs.storage.webhooks import reseal_secrets
from bricqs.webhook_secrets import SecretKeyError, secret_box
from bricqs.webhook_targets import Resolver, UnsafeTarget
from bricqs_dispatcher import metrics
from bricqs_dispatcher.http import Sender
from bricqs_dispatcher.schedule import RETRY_HORIZON, next_attempt_at, parse_retry_after
from bricqs_dispatcher.settings import DispatcherSettings
from bricqs_dispatcher.signing import signature_headers

log = logging.getLogger("bricqs.dispatcher")

Clock = Callable[[], datetime]
PURGE_INTERVAL = timedelta(hours=1)
MAINTENANCE_INTERVAL = timedelta(seconds=30)
"""How often orphans are swept and the backlog gauges read."""
GATHER_SECONDS = 0.005
"""Once an attempt has finished, how long the next round waits for the others in flight to
finish too: every round commits (one WAL flush) and a message holds its endpoint's place
until its result is recorded, so a round that records them together frees every place
at once instead of one round after another each freeing a few."""
_json = msgspec.json.Encoder()


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


def payload(message: DueMessage) -> bytes:
    """The body of a message, the same on every attempt: `{type, timestamp, data}`."""
    return _json.encode(
        {
            "type": message.fact_type,
            "timestamp": message.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": {
                "project_id": message.project_id,
                "environment": message.environment,
                "participant_id": message.participant_id,
                "fact_id": message.fact_id,
                "event_id": message.event_id,
                "occurred_at": message.occurred_at,
                "outcome": message.properties,
            },
        }
    )


class Dispatcher:
    """Delivers the outbox until stopped."""

    def __init__(
        self,
        settings: DispatcherSettings,
        pool: AsyncConnectionPool[Any],
        sender: Sender,
        *,
        clock: Clock = utc_now,
        random_fraction: Callable[[], float] = random.random,
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self.settings = settings
        self._pool = pool
        self._sender = sender
        self._resolver = Resolver(ttl_seconds=settings.dns_cache_seconds)
        self._box = secret_box(settings.webhook_secrets_keys)
        self._clock = clock
        self._random = random_fraction
        self._gather_seconds = gather_seconds
        self._token = ulid()
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished: list[Attempt] = []
        self._gone: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._next_purge = clock()
        self._next_maintenance = clock()
        self.last_round = time.monotonic()
        """When a round last completed (the liveness probe reads it)."""
        self.rounds = 0
        """Rounds completed (tests wait for a round to have run before a negative check)."""

    def stop(self) -> None:
        """Stop claiming; attempts in flight finish and are recorded."""
        self._stopping = True
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for."""
        return self._stopping

    async def run(self) -> None:
        """Rounds until stopped, then wait for the attempts in flight and record them."""
        backoff = 0.1
        while not self._stopping:
            self._wake.clear()
            try:
                await self.round()
                backoff = 0.1
            except Exception:  # PostgreSQL down or restarting: retried, attempts kept
                metrics.ROUND_ERRORS.inc()
                log.exception("dispatch round failed; retrying in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not self._finished:
                try:
                    async with asyncio.timeout(self.settings.poll_interval_ms / 1000):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            if self._finished and self._tasks and not self._stopping:
                await asyncio.wait(set(self._tasks), timeout=self._gather_seconds)
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self._record()

    async def round(self) -> int:
        """Record finished attempts and start new ones; how many were started."""
        now = self._clock()
        await self._maintain(now)
        claimed = await self._record(now, room=self.settings.max_in_flight - len(self._tasks))
        for message in claimed:
            task = asyncio.create_task(self._attempt(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        metrics.IN_FLIGHT.set(len(self._tasks))
        self.last_round = time.monotonic()
        self.rounds += 1
        return len(claimed)

    async def _maintain(self, now: datetime) -> None:
        """Sweep orphans and read the backlog every MAINTENANCE_INTERVAL, purge finished
        messages every PURGE_INTERVAL (every replica does: each step is idempotent).

        In a transaction of its own, out of the round's pipeline (it reads row counts)."""
        if now < self._next_maintenance and now < self._next_purge:
            return
        async with self._pool.connection() as conn, conn.transaction():
            await self._maintain_in(conn, now)

    async def _maintain_in(self, conn: Any, now: datetime) -> None:
        if now >= self._next_maintenance:
            deleted, failed = await sweep_orphans(
                conn, now=now, disabled_before=now - RETRY_HORIZON
            )
            metrics.SWEPT.labels("deleted").inc(deleted)
            metrics.SWEPT.labels("failed").inc(failed)
            due = await backlog(conn, now)
            metrics.DUE.set(due.due)
            metrics.OLDEST_DUE_SECONDS.set(due.oldest_due_seconds)
            metrics.DISABLED_ENDPOINTS.set(due.disabled_endpoints)
            metrics.SECRETS_RESEALED.inc(await reseal_secrets(conn, self._box))
            self._sender.prune()
            self._next_maintenance = now + MAINTENANCE_INTERVAL
        if now >= self._next_purge:
            metrics.PURGED.inc(
                await purge_finished(
                    conn,
                    delivered_before=now - timedelta(days=self.settings.delivered_retention_days),
                    failed_before=now - timedelta(days=self.settings.failed_retention_days),
                )
            )
            self._next_purge = now + PURGE_INTERVAL

    async def _record(self, now: datetime | None = None, room: int = 0) -> list[DueMessage]:
        """One transaction: record the attempts finished so far, then claim up to `room`
        messages due at `now`; if it does not commit (whatever failed in it), the
        attempts are kept for the next one.

        Pipelined, the claim read once committed: BEGIN, the records, the claim's two
        statements and COMMIT travel in one round trip."""
        finished, self._finished = self._finished, []
        gone, self._gone = self._gone, set()
        try:
            async with self._pool.connection() as conn:
                async with conn.pipeline(), conn.transaction():
                    await record_attempts(conn, finished)
                    for endpoint_id in gone:
                        await disable_endpoint(conn, endpoint_id, "the receiver answered 410 Gone")
                    claim = (
                        await claim_due(
                            conn,
                            now=now,
                            lease_until=now + timedelta(seconds=self.settings.lease_seconds),
                            token=self._token,
                            limit=room,
                            per_endpoint=self.settings.max_in_flight_per_endpoint,
                        )
                        if now is not None and room > 0
                        else None
                    )
                claimed = await claim.messages() if claim else []
        except BaseException:
            self._finished = finished + self._finished
            self._gone |= gone
            raise
        if finished:
            metrics.ROUND_RECORDS.observe(len(finished))
        metrics.ENDPOINTS_DISABLED.inc(len(gone))
        return claimed

    async def _attempt(self, message: DueMessage) -> None:
        try:
            attempt = await self._send(message)
            # Appended after the await: `_record` swaps the list meanwhile.
            self._finished.append(attempt)
        finally:
            self._wake.set()

    async def _send(self, message: DueMessage) -> Attempt:
        """One attempt of `message`, and what to do next."""
        body = payload(message)
        started = time.perf_counter()
        http_status: int | None = None
        retry_after: float | None = None
        error: str | None = None
        try:
            # Resolved and checked once per attempt; the connection goes to that address.
            target = await self._resolver.target(
                message.url, allow_private=self.settings.webhooks_allow_private
            )
            now = self._clock()
            headers = signature_headers(
                message_id=message.fact_id,
                delivery_id="dlv_" + ulid(),
                event_type=message.fact_type,
                timestamp=int(now.timestamp()),
                body=body,
                secrets=[self._box.open(s, message.endpoint_id) for s in message.secrets],
            )
            async with asyncio.timeout(self.settings.attempt_timeout_seconds):
                answer = await self._sender.post(target, headers, body)
            http_status = answer.status
            if http_status in (429, 503):
                retry_after = parse_retry_after(answer.retry_after)
        except UnsafeTarget as exc:
            error = f"refused: {exc}"
        except SecretKeyError as exc:
            error = f"signing secret: {exc}"
        except TimeoutError:
            error = "timeout"
        except (OSError, EOFError, asyncio.LimitOverrunError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:  # a defect here must not leave the message leased
            log.exception("attempt of %s failed unexpectedly", message.fact_id)
            error = f"{type(exc).__name__}: {exc}"[:500]
        elapsed = time.perf_counter() - started
        metrics.ATTEMPT_SECONDS.observe(elapsed)
        return self._outcome(message, http_status, retry_after, error, elapsed)

    def _outcome(
        self,
        message: DueMessage,
        http_status: int | None,
        retry_after: float | None,
        error: str | None,
        elapsed: float,
    ) -> Attempt:
        now = self._clock()
        number = message.attempts + 1
        next_at: datetime | None = now
        if http_status is not None and 200 <= http_status < 300:
            status = "delivered"
        elif http_status == 410:
            status = "failed"
            self._gone.add(message.endpoint_id)
        else:
            next_at = next_attempt_at(number, now, retry_after=retry_after, random=self._random)
            status = "pending" if next_at is not None else "failed"
        if error is None and status != "delivered":
            error = f"HTTP {http_status}"
        metrics.ATTEMPTS.labels({"pending": "retry"}.get(status, status)).inc()
        return Attempt(
            endpoint_id=message.endpoint_id,
            fact_id=message.fact_id,
            token=self._token,
            status=status,
            next_attempt_at=next_at or now,
            http_status=http_status,
            latency_ms=round(elapsed * 1000),
            error=error,
            at=now,
        )
