"""The load test's own logic, without a service: the open-loop schedule, the windows
without sync traffic, and the SLO gate's verdict per endpoint (on Locust's own stats)."""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

import pytest

# Locust runs from loadtests/, where its modules import `common` as a top-level package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "loadtests"))

from common.gate import (
    BATCH,
    LEADERBOARD,
    MIN_RATIO_SAMPLES,
    NO_SYNC,
    SINGLE,
    STATE,
    SYNC,
    Bounds,
    Run,
    Timings,
    slo_problems,
    summary,
)
from common.pacing import Arrivals, percentile, sync_window

BOUNDS = Bounds({"async single": 50, "batch": 100, "sync": 250, "api reads": 100})


def test_open_loop_arrivals_keep_the_offered_rate_whatever_the_caller_does() -> None:
    arrivals = Arrivals(200.0, start=1000.0, rng=random.Random(1))
    # The caller looks only now and then (a stalled generator): nothing is lost, every
    # send time that came due is handed out, oldest first, and lies in the past.
    seen: list[float] = []
    for now in (1000.5, 1003.0, 1003.0, 1010.0):
        due = arrivals.due(now)
        assert due == sorted(due) and all(t <= now for t in due)
        seen.extend(due)
    assert seen[0] > 1000.0 and arrivals.next_at > 1010.0
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert 0.9 * 2000 < len(seen) < 1.1 * 2000  # 10 s at 200/s


def test_open_loop_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        Arrivals(0.0, start=0.0, rng=random.Random(1))


def test_sync_windows_alternate_and_zero_means_always() -> None:
    assert [sync_window(t, 5.0) for t in (0, 4.9, 5.0, 9.9, 10.0, 15.1)] == [
        True,
        True,
        False,
        False,
        True,
        False,
    ]
    assert all(sync_window(t, 0) for t in (0, 5, 12.5))


def test_percentile_is_the_nearest_rank() -> None:
    assert percentile([], 0.99) is None
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0


def stats_with(**requests: list[int]) -> Run:
    return {name: Timings(Counter(times)) for name, times in requests.items()}


def test_the_gate_judges_each_endpoint_against_its_own_bound() -> None:
    fine = {SINGLE: [10] * 200, BATCH: [90] * 200, SYNC: [240] * 200, STATE: [60] * 200}
    assert slo_problems(stats_with(**fine), BOUNDS) == []
    # 90 ms is fine for a batch and for sync, not for an async single event.
    slow_single = {**fine, SINGLE: [90] * 200}
    assert slo_problems(stats_with(**slow_single), BOUNDS) == ["p99 of async single 90 ms >= 50 ms"]
    slow_reads = {**fine, LEADERBOARD: [300] * 10}
    (problem,) = slo_problems(stats_with(**slow_reads), BOUNDS)
    assert problem.startswith("p99 of api reads ")


def test_an_endpoint_the_run_did_not_exercise_is_not_judged() -> None:
    assert slo_problems(stats_with(**{SINGLE: [10] * 100}), BOUNDS) == []
    assert slo_problems({}, BOUNDS) == ["no requests were made"]


def test_errors_are_judged_on_all_requests() -> None:
    stats = {SINGLE: Timings(Counter({10: 1000}), failures=1)}
    (problem,) = slo_problems(stats, BOUNDS)
    assert problem.startswith("error ratio 0.1000% >= 0.10%")


def test_async_latency_with_sync_traffic_is_compared_with_the_same_run_without() -> None:
    quiet = [10] * MIN_RATIO_SAMPLES
    ok = stats_with(**{SINGLE: [15] * MIN_RATIO_SAMPLES, SINGLE + NO_SYNC: quiet})
    assert slo_problems(ok, BOUNDS) == []
    assert summary(ok)["async_single_interference"] == 1.5
    hurt = stats_with(**{SINGLE: [16] * MIN_RATIO_SAMPLES, SINGLE + NO_SYNC: quiet})
    assert slo_problems(hurt, BOUNDS) == [
        "p99 of async single with sync traffic 1.60x its p99 without > 1.5x"
    ]
    # Too few requests on a side (a smoke run): the ratio is not judged.
    few = stats_with(**{SINGLE: [40] * MIN_RATIO_SAMPLES, SINGLE + NO_SYNC: quiet[:-1]})
    assert slo_problems(few, BOUNDS) == []
    assert summary(few)["async_single_interference"] is None
