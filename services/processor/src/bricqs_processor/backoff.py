"""Capped exponential backoff with jitter, for retries against Redis and PostgreSQL."""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with jitter: initial, 2x, 4x, ... up to the cap."""

    def __init__(self, initial_ms: int, cap_ms: int) -> None:
        self._initial = initial_ms / 1000
        self._cap = cap_ms / 1000
        self._attempt = 0

    def next_delay(self) -> float:
        """The next wait in seconds (jittered, so replicas do not retry in step)."""
        delay = min(self._cap, self._initial * 2.0**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security

    def reset(self) -> None:
        """Start again from the initial delay after a success."""
        self._attempt = 0
