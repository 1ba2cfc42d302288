"""The SLO gate's verdict, pure: what a run's latencies and errors say against the bounds.

Service levels of the realistic mix (SPEC §7), one p99 bound per endpoint, read from
locust.conf (`slo-…` options, see common/options.py):

- async single events p99 < 50 ms, and with sync traffic present at most 1.5 x its p99
  in the windows without sync traffic (the same run: see common/pacing.sync_window);
- batch ingest p99 < 100 ms; sync ingest p99 < 250 ms; the api's reads p99 < 100 ms;
- errors < 0.1% of all requests.

Answers that the test provokes on purpose -- 422 for invalid events, duplicates answered
as such -- are successes of their own request names (`... [invalid]`, `... [duplicate]`),
not errors. SLO_P99_MS, when set, replaces every p99 bound (the smoke test forces a
failure that way). No Locust import here (it monkey-patches the importing process):
common/slo.py hands Locust's statistics over as `Timings`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SINGLE = "/api/v1/ingest/events"
BATCH = "/api/v1/ingest/events/batch"
SYNC = "/api/v1/ingest/events/sync"
STATE = "/api/v1/gamify/participants/{participant_id}/state"
LEADERBOARD = "/api/v1/gamify/leaderboards/{code}?limit=10"

# Request names by tag: `SINGLE + NO_SYNC` is an async single event sent in a window
# without sync traffic; `SYNC + HOTTEST` a sync event of the most active participant.
NO_SYNC = " [no sync]"
HOTTEST = " [hottest]"
PROVOKED = ("[invalid]", "[duplicate]")

# Which request names each gated endpoint covers.
ENDPOINTS: dict[str, tuple[str, ...]] = {
    "async single": (SINGLE, SINGLE + NO_SYNC, f"{SINGLE} [duplicate]", f"{SINGLE} [invalid]"),
    "batch": (BATCH,),
    "sync": (SYNC, SYNC + HOTTEST),
    "api reads": (STATE, LEADERBOARD),
}
# Fewer requests than this on either side and the interference ratio is not judged: the
# p99 of a handful of requests says nothing (a smoke run never reaches a quiet window).
MIN_RATIO_SAMPLES = 100


@dataclass
class Timings:
    """The requests of one name: response times (ms, as Locust rounds them) and failures."""

    times: Counter[int] = field(default_factory=Counter)
    failures: int = 0

    @property
    def requests(self) -> int:
        """Requests answered or failed (Locust counts a failure as a request too)."""
        return sum(self.times.values())

    def p(self, share: float) -> int | None:
        """The `share` percentile in ms (nearest rank), None without requests."""
        total = self.requests
        if not total:
            return None
        rank = share * total
        seen = 0
        for ms in sorted(self.times):
            seen += self.times[ms]
            if seen >= rank:
                return ms
        return max(self.times)

    def add(self, other: Timings) -> None:
        """Count `other`'s requests in this one."""
        self.times.update(other.times)
        self.failures += other.failures


Run = dict[str, Timings]  # request name -> its timings


@dataclass(frozen=True)
class Bounds:
    """The service levels a run is judged against (SPEC §7, the realistic mix)."""

    p99_ms: dict[str, float]
    max_error_ratio: float = 0.001
    sync_interference: float = 1.5

    @classmethod
    def from_options(cls, options: Any) -> Bounds:
        """From Locust's parsed options (locust.conf); SLO_P99_MS replaces every p99."""
        p99 = {
            "async single": options.slo_async_single_p99_ms,
            "batch": options.slo_batch_p99_ms,
            "sync": options.slo_sync_p99_ms,
            "api reads": options.slo_api_reads_p99_ms,
        }
        forced = os.environ.get("SLO_P99_MS")
        if forced is not None:
            p99 = dict.fromkeys(p99, float(forced))
        return cls(p99, options.slo_max_error_ratio, options.slo_sync_interference)


def merged(run: Run, names: tuple[str, ...]) -> Timings:
    """The timings of every request of `names`."""
    together = Timings()
    for name in names:
        if name in run:
            together.add(run[name])
    return together


def everything(run: Run) -> Timings:
    """The timings of every request of the run."""
    return merged(run, tuple(run))


def slo_problems(run: Run, bounds: Bounds) -> list[str]:
    """What broke the service levels in this run (empty: all met). An endpoint the run
    did not exercise (no api host given, say) is not judged."""
    total = everything(run)
    if total.requests == 0:
        return ["no requests were made"]
    problems = []
    ratio = total.failures / total.requests
    if ratio >= bounds.max_error_ratio:
        problems.append(
            f"error ratio {ratio:.4%} >= {bounds.max_error_ratio:.2%}"
            f" ({total.failures} of {total.requests})"
        )
    for endpoint, names in ENDPOINTS.items():
        value = merged(run, names).p(0.99)
        bound = bounds.p99_ms[endpoint]
        if value is not None and value >= bound:
            problems.append(f"p99 of {endpoint} {value} ms >= {bound:g} ms")
    worse = interference(run)
    if worse is not None and worse > bounds.sync_interference:
        problems.append(
            f"p99 of async single with sync traffic {worse:.2f}x its p99 without"
            f" > {bounds.sync_interference:g}x"
        )
    return problems


def interference(run: Run) -> float | None:
    """p99 of async single events sent with sync traffic over those sent without; None
    when either side has fewer than MIN_RATIO_SAMPLES requests."""
    loud, quiet = merged(run, (SINGLE,)), merged(run, (SINGLE + NO_SYNC,))
    if min(loud.requests, quiet.requests) < MIN_RATIO_SAMPLES:
        return None
    return (loud.p(0.99) or 0) / max(1, quiet.p(0.99) or 0)


def summary(run: Run) -> dict[str, Any]:
    """Totals for the log: requests, provoked refusals, errors, p50/p99 overall and per
    endpoint, the hottest participant's sync p99 and the interference ratio."""
    total = everything(run)
    worse = interference(run)
    return {
        "requests": total.requests,
        "provoked_4xx_or_duplicates": sum(
            t.requests for name, t in run.items() if any(tag in name for tag in PROVOKED)
        ),
        "errors": total.failures,
        "error_ratio": round(total.failures / max(1, total.requests), 6),
        "p50_ms": total.p(0.5),
        "p99_ms": total.p(0.99),
        "p99_ms_by_endpoint": {
            endpoint: merged(run, names).p(0.99) for endpoint, names in ENDPOINTS.items()
        },
        "p99_ms_sync_hottest_participant": merged(run, (SYNC + HOTTEST,)).p(0.99),
        "p99_ms_async_single_without_sync": merged(run, (SINGLE + NO_SYNC,)).p(0.99),
        "async_single_interference": None if worse is None else round(worse, 2),
    }
