"""Services as real subprocesses for tests: processors started against given servers,
and a bounded wait. Shared by tests/processor and tests/faults.

Every processor a factory starts is killed by `stop_all` (the fixtures call it at
teardown); its log is in the factory's folder (shown when a wait times out).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bricqs_devstack.servers import free_port
from tests.conftest import service_env

# Short timings so recovery happens within a test; CLAIM_MIN_IDLE_MS must stay above
# BATCH_TIMEOUT_MS + STATEMENT_TIMEOUT_MS (the processor refuses to start otherwise).
FAST = {
    "CLAIM_MIN_IDLE_MS": "2000",
    "BATCH_TIMEOUT_MS": "1200",
    "STATEMENT_TIMEOUT_MS": "700",
    "RECLAIM_INTERVAL_MS": "250",
    "BLOCK_MS": "200",
    "BACKOFF_INITIAL_MS": "20",
    "BACKOFF_MAX_MS": "300",
    "DATABASE_TIMEOUT_MS": "1000",
    "STATS_INTERVAL_MS": "200",
    # The clock's facts would land in these tests' tables at times of their own choosing;
    # the scheduler is tested on the test's clock (tests/processor/test_scheduler.py).
    "SCHEDULER_ENABLED": "false",
}


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str] = str
) -> Any:
    """Poll `predicate` until truthy; fail naming `what` (and showing logs) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{logs()}")
        time.sleep(0.05)


def children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (from /proc): a PostgreSQL server's own."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name (field 2) is in parentheses and may hold spaces.
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def backends(postmaster: int) -> list[int]:
    """The PostgreSQL processes serving a client connection (`postgres: user db host`)."""
    found = []
    for pid in children(postmaster):
        with contextlib.suppress(OSError):
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if title.startswith("postgres: bricqs "):
                found.append(pid)
    return found


@dataclass
class Processor:
    """One `bricqs-processor` subprocess."""

    name: str
    process: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM and wait; the exit code. A processor still running after `timeout`
        fails the test with its threads' stacks (SIGUSR1) and its log."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(1)  # for the stacks to reach the log
            pytest.fail(
                f"processor {self.name} still running {timeout} s after SIGTERM\n{self.log()}"
            )

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics, keyed by name plus labels as written."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def wait_ready(self, timeout: float = 20) -> None:
        def ready() -> bool:
            assert self.alive(), f"processor exited with {self.process.returncode}\n{self.log()}"
            try:
                return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout, f"processor {self.name} to be ready", self.log)


@dataclass
class ProcessorFactory:
    """Starts processors against given servers; kills leftovers at teardown."""

    redis_url: str
    database_url: str
    tmp_path: Path
    started: list[Processor] = field(default_factory=list)

    def start(self, *, wait: bool = True, **env: str) -> Processor:
        name = env.pop("CONSUMER_NAME", f"test-{uuid.uuid4().hex[:8]}")
        port = free_port()
        log_path = self.tmp_path / f"processor-{name}.log"
        settings = {**FAST, **env, "CONSUMER_NAME": name, "METRICS_PORT": str(port)}
        level = settings.pop("LOG_LEVEL", "INFO")
        environ = service_env(self.redis_url, self.database_url, **settings)
        environ["LOG_LEVEL"] = level  # INFO: the log shows reclaims and retries
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bricqs_processor.main"],
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processor = Processor(name, process, port, log_path)
        self.started.append(processor)
        if wait:
            processor.wait_ready()
        return processor

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in self.started)

    def stop_all(self) -> None:
        for processor in self.started:
            if processor.alive():
                processor.process.kill()
                processor.process.wait(10)
