"""Helpers shared by the ingest tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bricqs_devstack.servers import free_port
from tests.conftest import service_env

EVENTS = "/api/v1/ingest/events"
BATCH = "/api/v1/ingest/events/batch"
SYNC = "/api/v1/ingest/events/sync"


@contextmanager
def granian_ingest(
    redis_url: str, database_url: str, *, workers: int = 1, **env: str
) -> Iterator[str]:
    """Run the ingest service under Granian on a free loopback port; yield its base URL."""
    with granian_app(
        "bricqs_ingest.app:create_app", redis_url, database_url, workers=workers, **env
    ) as base:
        yield base


@contextmanager
def granian_app(
    target: str,
    redis_url: str,
    database_url: str,
    *,
    workers: int = 1,
    access_log: bool = False,
    log_path: Path | None = None,
    **env: str,
) -> Iterator[str]:
    """Run an app factory under Granian on a free loopback port; yield its base URL.

    With `access_log`, Granian logs every request at debug level. With `log_path`, the
    process's output goes to that file (else it is kept to explain a failed start)."""
    port = free_port()
    log = log_path.open("wb") if log_path else None
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "asgi",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            *(["--access-log", "--log-level", "debug"] if access_log else ["--no-access-log"]),
            target,
        ],
        env=service_env(redis_url, database_url, **env),
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_bytes() if log_path else process.stderr.read()  # type: ignore[union-attr]
                raise RuntimeError(f"{target} did not start: {output!r}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        if log is not None:
            log.close()
