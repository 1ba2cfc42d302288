"""The SLO gate: checked once, when Locust quits, and turned into the exit code.

Service levels (SPEC §7): p99 below 50 ms and fewer than 0.1% errors. Answers that the
test provokes on purpose -- 422 for invalid events, duplicates answered as such -- are
successes of their own request names (`... [invalid]`, `... [duplicate]`), counted
separately, not errors. Thresholds can be tightened or loosened with SLO_P99_MS and
SLO_MAX_ERROR_RATIO (the smoke test forces a failure that way).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

log = logging.getLogger("bricqs.loadtest")

P99_MS = float(os.environ.get("SLO_P99_MS", "50"))
MAX_ERROR_RATIO = float(os.environ.get("SLO_MAX_ERROR_RATIO", "0.001"))
PROVOKED = ("[invalid]", "[duplicate]")


def slo_problems(environment: Environment) -> list[str]:
    """What broke the service levels in this run (empty: all met)."""
    total = environment.stats.total
    if total.num_requests == 0:
        return ["no requests were made"]
    problems = []
    if total.fail_ratio >= MAX_ERROR_RATIO:
        problems.append(
            f"error ratio {total.fail_ratio:.4%} >= {MAX_ERROR_RATIO:.2%}"
            f" ({total.num_failures} of {total.num_requests})"
        )
    p99 = total.get_response_time_percentile(0.99)
    if p99 is None or p99 >= P99_MS:
        problems.append(f"p99 {p99} ms >= {P99_MS:g} ms")
    return problems


def summary(environment: Environment) -> dict[str, Any]:
    """Totals for the log: requests, provoked refusals, errors, p50/p99."""
    stats = environment.stats
    provoked = sum(
        entry.num_requests
        for entry in stats.entries.values()
        if any(tag in entry.name for tag in PROVOKED)
    )
    total = stats.total
    return {
        "requests": total.num_requests,
        "provoked_4xx_or_duplicates": provoked,
        "errors": total.num_failures,
        "error_ratio": round(total.fail_ratio, 6),
        "rps": round(total.total_rps, 1),
        "p50_ms": total.get_response_time_percentile(0.5),
        "p99_ms": total.get_response_time_percentile(0.99),
    }


@events.quitting.add_listener
def check_slos(environment: Environment, **_: Any) -> None:
    """Set the process exit code from the SLOs (on the master or a standalone runner)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    problems = slo_problems(environment)
    log.warning("load test summary: %s", summary(environment))
    if problems:
        for problem in problems:
            log.error("SLO not met: %s", problem)
        environment.process_exit_code = 1
    else:
        log.warning("SLOs met: p99 < %g ms, error ratio < %g", P99_MS, MAX_ERROR_RATIO)
        environment.process_exit_code = 0
