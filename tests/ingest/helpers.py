"""Helpers shared by the ingest tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bricqs.devstack import free_port
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
    target: str, redis_url: str, database_url: str, *, workers: int = 1, **env: str
) -> Iterator[str]:
    """Run an app factory under Granian on a free loopback port; yield its base URL."""
    port = free_port()
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
            "--no-access-log",
            target,
        ],
        env=service_env(redis_url, database_url, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
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
                raise RuntimeError(f"ingest did not start: {process.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
