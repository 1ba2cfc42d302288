"""The consumer's stop signal and its patient waits, shared by its readers and its store.

`stop()` ends intake. Every wait of the consumer is either woken by it (`sleep`) or
bounded once stopping (`until_done` gives up a Redis write after `SHUTDOWN_ATTEMPTS`:
what is left unacknowledged is redelivered to another consumer and found stored), and
each beats the liveness heartbeat, so a long outage never looks like a stall.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ResponseError

from bricqs.redis_connect import REDIS_ERRORS
from bricqs_processor import metrics
from bricqs_processor.backoff import Backoff
from bricqs_processor.liveness import Heartbeat
from bricqs_processor.settings import ProcessorSettings

log = logging.getLogger("bricqs.processor")

T = TypeVar("T")

# Once stopping, a Redis write (XACK, dead letter) is tried this often before giving up;
# what is left unacknowledged is redelivered to another consumer and found stored.
SHUTDOWN_ATTEMPTS = 3


class Lifecycle:
    """Whether the consumer is stopping, and waits that respect it."""

    def __init__(self, settings: ProcessorSettings, heartbeat: Heartbeat) -> None:
        self.settings = settings
        self.heartbeat = heartbeat
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Stop intake; the batch in hand is finished."""
        if not self._stopping.is_set():
            log.info("stopping: finishing the batch in hand")
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether `stop()` was called."""
        return self._stopping.is_set()

    async def until_done(self, action: Callable[[], Awaitable[T]], dependency: str) -> T | None:
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
                    await self.sleep(delay)

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up early when stopping."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass
