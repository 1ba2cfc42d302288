"""The SLO gate in Locust: judged once, when Locust quits, and turned into the exit code
(the verdict itself is common/gate.py's); also what the load generator's CPU cost."""

from __future__ import annotations

import logging
import os
import resource
import time
from collections import Counter
from typing import Any

from common.gate import Bounds, Run, Timings, slo_problems, summary
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import RequestStats

log = logging.getLogger("bricqs.loadtest")


def timings(stats: RequestStats) -> Run:
    """Locust's statistics as the gate reads them, by request name."""
    run: Run = {}
    for entry in stats.entries.values():
        found = run.setdefault(entry.name, Timings())
        found.add(Timings(Counter(entry.response_times), entry.num_failures))
    return run


class GeneratorCpu:
    """CPU time this Locust process used since the load started, so a run on a shared
    machine says how much of it the load generator itself took."""

    def __init__(self) -> None:
        self.started_wall = time.monotonic()
        self.started_cpu = _cpu_seconds()

    def report(self) -> dict[str, float]:
        """CPU seconds, wall seconds, share of one core and of the machine's cores."""
        wall = max(1e-9, time.monotonic() - self.started_wall)
        cpu = _cpu_seconds() - self.started_cpu
        return {
            "generator_cpu_s": round(cpu, 1),
            "wall_s": round(wall, 1),
            "share_of_one_core": round(cpu / wall, 3),
            "share_of_machine": round(cpu / wall / (os.cpu_count() or 1), 3),
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_cpu: list[GeneratorCpu] = []


@events.test_start.add_listener
def start_cpu_clock(environment: Environment, **_: Any) -> None:
    """Start measuring the generator's CPU when the load starts."""
    _cpu[:] = [GeneratorCpu()]


@events.quitting.add_listener
def check_slos(environment: Environment, **_: Any) -> None:
    """Set the process exit code from the SLOs (on the master or a standalone runner)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    bounds = Bounds.from_options(environment.parsed_options)
    run = timings(environment.stats)
    problems = slo_problems(run, bounds)
    log.warning(
        "load test summary: %s",
        {**summary(run), "rps": round(environment.stats.total.total_rps, 1)},
    )
    if _cpu:
        # With --processes this is the master's share only; each worker is a process.
        log.warning("load generator CPU: %s", _cpu[0].report())
    if problems:
        for problem in problems:
            log.error("SLO not met: %s", problem)
        environment.process_exit_code = 1
    else:
        log.warning(
            "SLOs met: p99 %s, interference <= %gx, error ratio < %g",
            {k: f"< {v:g} ms" for k, v in bounds.p99_ms.items()},
            bounds.sync_interference,
            bounds.max_error_ratio,
        )
        environment.process_exit_code = 0
