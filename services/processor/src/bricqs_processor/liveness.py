"""Liveness of the consume loop: a heartbeat the loop beats at every step.

Every wait of the loop is bounded (a Redis round trip by the client's socket timeout, a
batch transaction by `BATCH_TIMEOUT_MS`, a backoff by `BACKOFF_MAX_MS`), so a loop that
has not beaten for longer than `ProcessorSettings.heartbeat_bound_seconds()` is stuck on
a wait that has no end (a frozen server holding a connection open, say): `/health/live`
then fails and the orchestrator restarts the process. An outage is not a stall: the loop
keeps beating between its retries, so it is never restarted for a fault a restart
cannot fix.

The heartbeat is a timestamp in memory, not a Redis key as in arq: the probe asks this
process, and a key in Redis would tie liveness to Redis, so a Redis outage would restart
every replica at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Heartbeat:
    """When the consume loop last moved, and whether that is recent enough."""

    def __init__(self, bound_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound_seconds = bound_seconds
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        """The loop moved."""
        self._last = self._clock()

    def age(self) -> float:
        """Seconds since the last beat."""
        return self._clock() - self._last

    def alive(self) -> bool:
        """Whether the loop beat within the bound."""
        return self.age() <= self.bound_seconds

    def probe(self) -> tuple[int, dict[str, Any]]:
        """The answer of `/health/live`: 503 once the loop is stale, with its age."""
        alive = self.alive()
        return (200 if alive else 503), {
            "status": "ok" if alive else "stalled",
            "heartbeat_age_seconds": round(self.age(), 3),
            "bound_seconds": self.bound_seconds,
        }
