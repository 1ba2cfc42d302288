"""When requests are sent: the open-loop schedule and the windows without sync traffic.

Open loop: requests leave on a schedule fixed in advance (Poisson arrivals at the offered
rate), whether or not earlier answers came back, as a real population of clients sends
them. A closed loop (each client waits for its answer) slows down with the service and
hides its queueing (coordinated omission). Pure: the clock is the caller's.
"""

from __future__ import annotations

import random


class Arrivals:
    """Send times of one open-loop source: Poisson arrivals at `rate` per second."""

    def __init__(self, rate: float, start: float, rng: random.Random) -> None:
        if rate <= 0:
            raise ValueError("an open-loop source needs a positive rate")
        self.rate = rate
        self.rng = rng
        # A random first gap, so sources started together do not fire together.
        self.next_at = start + rng.expovariate(rate)

    def due(self, now: float) -> list[float]:
        """The send times that came due by `now` (oldest first); the schedule moves on.

        A send time in the past still counts: its request goes out late, and its
        lateness is the generator's, reported apart from the service's latency.
        """
        times = []
        while self.next_at <= now:
            times.append(self.next_at)
            self.next_at += self.rng.expovariate(self.rate)
        return times


def sync_window(elapsed: float, window: float) -> bool:
    """Whether sync requests are sent `elapsed` seconds into the run: windows of
    `window` seconds alternate with and without them (first with), so one run measures
    async latency both ways under otherwise equal load. `window` 0: always."""
    if window <= 0:
        return True
    return int(elapsed // window) % 2 == 0


def percentile(values: list[float], share: float) -> float | None:
    """The `share` percentile of `values` (nearest rank), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(share * len(ordered) + 0.999999) - 1))
    return ordered[rank]
