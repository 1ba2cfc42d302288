"""The fault suite's faults: processors SIGKILLed, Redis and PostgreSQL restarted, Redis
frozen, PostgreSQL crashed, one after another while the clients send.

Redis runs with AOF `appendfsync everysec` and is restarted cleanly (SIGTERM: it writes
the AOF before exiting), so nothing acknowledged may be lost. A Redis *crash* can lose
about the last second of acknowledged writes: docs/reliability.md describes that window
and how to close it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections import Counter

import psycopg

from bricqs_devstack.servers import Server, restart
from tests.faults.traffic import Traffic
from tests.processes import ProcessorFactory, backends

PROCESSORS = 3
# Seconds between two faults; the schedule repeats until the load ends.
FAULT_GAP = 2.5
REDIS_PAUSE_SECONDS = 1.5
PROCESSOR_ENV = {
    # Crash-looped processors are killed far more often than in production; entries they
    # held climb towards the dead-letter limit for no fault of their own. The suite asserts
    # that nothing was dead-lettered, so keep the limit out of the way of the kills.
    "MAX_DELIVERIES": "50",
    "BATCH_SIZE": "100",
    "REDIS_TIMEOUT_MS": "1000",
}
KILL = "processor SIGKILL"
ROTATION = ("redis restart", "postgres restart", "redis pause", "postgres crash")
# A crashed PostgreSQL (one of its backends SIGKILLed, as the OOM killer would) restarts
# every process and replays its WAL before it answers again; at most this long.
CRASH_RECOVERY_SECONDS = 30.0
KINDS = (KILL, *ROTATION)


class Faults(threading.Thread):
    """Injects faults one after another, FAULT_GAP apart, until stopped: every other one
    SIGKILLs a processor (and starts a replacement), the rest rotate through a clean Redis
    restart, a PostgreSQL restart, a frozen Redis and a crashed PostgreSQL."""

    def __init__(
        self, servers: dict[str, Server], processors: ProcessorFactory, traffic: Traffic
    ) -> None:
        super().__init__(daemon=True, name="faults")
        self.servers = servers
        self.processors = processors
        self.traffic = traffic
        self.counts: Counter[str] = Counter()
        self.timeline: list[tuple[float, float, str]] = []
        """(start, end, kind) of every fault, in seconds into the run."""
        self.halt = threading.Event()
        self.failure: BaseException | None = None
        self.rng = random.Random(99)

    def run(self) -> None:
        try:
            turn = 0
            while not self.halt.wait(FAULT_GAP):
                if turn % 2 == 0:
                    self.kill_processor()
                else:
                    self.inject(ROTATION[(turn // 2) % len(ROTATION)])
                turn += 1
        except BaseException as exc:
            self.failure = exc
            raise

    def fewest(self) -> int:
        """How many times the least injected kind was injected so far."""
        return min(self.counts[kind] for kind in KINDS)

    def kill_processor(self) -> None:
        alive = [p for p in self.processors.started if p.alive()]
        if alive:
            at = self.traffic.now()
            self.rng.choice(alive).kill()
            self.counts[KILL] += 1
            self.timeline.append((at, self.traffic.now(), KILL))
        for _ in range(PROCESSORS - len(alive) + 1):
            self.processors.start(wait=False, **PROCESSOR_ENV)

    def inject(self, kind: str) -> None:
        at = self.traffic.now()
        if kind == "redis restart":
            self.servers["redis"] = restart(self.servers["redis"])
        elif kind == "postgres restart":
            self.servers["postgres"] = restart(self.servers["postgres"])
        elif kind == "postgres crash":
            self.crash_postgres()
        else:
            self.servers["redis"].pause()
            try:
                time.sleep(REDIS_PAUSE_SECONDS)
            finally:
                self.servers["redis"].resume()
        self.counts[kind] += 1
        self.timeline.append((at, self.traffic.now(), kind))

    def crash_postgres(self) -> None:
        """SIGKILL a backend: the postmaster ends every other process and recovers from
        its WAL, so what a commit acknowledged must have reached the WAL first."""
        server = self.servers["postgres"]
        victims = backends(server.process.pid)
        if victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.rng.choice(victims), signal.SIGKILL)
        deadline = time.monotonic() + CRASH_RECOVERY_SECONDS
        time.sleep(0.2)  # the postmaster notices the death and starts its recovery
        while time.monotonic() < deadline:
            try:
                psycopg.connect(server.url, connect_timeout=1).close()
                return
            except psycopg.Error:
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL not back {CRASH_RECOVERY_SECONDS} s after a crash")
