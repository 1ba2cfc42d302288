"""Interpreter settings the long-running services share."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Awaitable

# Young-generation collections every 50,000 net allocations instead of CPython's 700.
# A service allocating thousands of short-lived objects per request or batch otherwise
# pauses for a collection every few requests, and the pauses add up in the tail:
# measured on ingest at 7,500 requests/s, p99 30-45 ms -> 9-12 ms; the processor gains
# about 8% throughput. Garbage in reference cycles waits a little longer (at most the
# objects of one young generation).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_garbage_collector(young: int = GC_THRESHOLDS[0]) -> None:
    """Apply GC_THRESHOLDS to this process, with young collections every `young` net
    allocations."""
    gc.set_threshold(young, *GC_THRESHOLDS[1:])


class ShutdownSteps:
    """The steps of a worker's shutdown, each bounded in time.

    A step that does not finish within its bound is logged with the stacks of every task
    still running (where it is stuck) and skipped, so a stop signal always ends the process
    instead of leaving it hanging until Kubernetes kills it. `clean` says whether every step
    finished; when one did not, the caller should exit without asyncio's own teardown,
    which would wait for the stuck task again (`exit_now`).
    """

    def __init__(self, log: logging.Logger, timeout_s: float = 10.0) -> None:
        self.log = log
        self.timeout_s = timeout_s
        self.clean = True

    async def run(self, name: str, step: Awaitable[object]) -> None:
        """Await `step` for at most `timeout_s`; log and go on when it does not end. The
        step is abandoned, not cancelled: cancelling waits for it to end too."""
        task = asyncio.ensure_future(step)
        done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
        if not done:
            self.clean = False
            self.log.error("shutdown step %r still running after %.0f s", name, self.timeout_s)
            log_task_stacks(self.log)
            return
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:  # a failing step does not stop the others
            self.log.warning("shutdown step %r failed: %s: %s", name, type(exc).__name__, exc)

    def exit_now(self, code: int = 0) -> None:
        """End the process at once (logs flushed) after a step that did not finish."""
        logging.shutdown()
        os._exit(code)


def log_task_stacks(log: logging.Logger) -> None:
    """Log the stack of every asyncio task of the running loop."""
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=8)
        where = " <- ".join(
            f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno} {f.f_code.co_name}"
            for f in reversed(frames)
        )
        log.error("task %s: %s", task.get_name(), where or "(no frames)")
