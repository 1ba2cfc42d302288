"""When a failed attempt is tried again (pure, no I/O).

The Standard Webhooks schedule: after the first attempt, about 5 s, 5 min, 30 min, 2 h,
5 h, then every 10 h until about three days have passed; each wait is jittered so the
retries of an outage do not arrive in step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

JITTER = 0.2
"""Each wait is drawn in [1 - JITTER, 1 + JITTER] times its nominal value."""
RETRY_DELAYS_SECONDS = (5, 300, 1_800, 7_200, 18_000, *([36_000] * 6))
"""The wait after each failed attempt; after the last one the message has failed."""
MAX_ATTEMPTS = len(RETRY_DELAYS_SECONDS) + 1
RETRY_HORIZON = timedelta(seconds=sum(RETRY_DELAYS_SECONDS) * (1 + JITTER))
"""How long after its first attempt a message can still be retried."""
RETRY_AFTER_BOUNDS = (1, 86_400)
"""A receiver's Retry-After is honoured within these seconds."""


def next_attempt_at(
    attempt: int,
    now: datetime,
    *,
    retry_after: float | None = None,
    random: Callable[[], float],
) -> datetime | None:
    """When to try again after failed attempt number `attempt` (1 for the first), or None
    when it was the last. A receiver's Retry-After replaces the scheduled wait."""
    if attempt >= MAX_ATTEMPTS:
        return None
    if retry_after is not None:
        low, high = RETRY_AFTER_BOUNDS
        return now + timedelta(seconds=min(max(retry_after, low), high))
    nominal = RETRY_DELAYS_SECONDS[attempt - 1]
    return now + timedelta(seconds=nominal * (1 - JITTER + 2 * JITTER * random()))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (an HTTP date is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
