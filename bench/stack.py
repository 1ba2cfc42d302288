"""The system on loopback for a benchmark: servers, tenants, services as subprocesses.

Redis and PostgreSQL come from `bricqs_devstack.servers` (durable settings: AOF with fsync every
second, PostgreSQL with fsync on), unless URLs are given; the services run exactly as
`make run` runs them (Granian, one worker; the `bricqs-processor` script).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec
import psycopg
import redis

from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS
from bricqs.storage import tenants
from bricqs.storage.definitions import create_definition
from bricqs.storage.migrate import migrate
from bricqs.storage.tenants import SCOPES, Tenant
from bricqs.stream import stream_key
from bricqs_devstack.servers import Server, free_port, start_postgres, start_redis

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Project:
    """A benchmark tenant: its id and a live key."""

    project_id: str
    key: str


@dataclass
class Stack:
    """Servers and service processes started for one run; `close()` stops them all."""

    redis_url: str
    database_url: str
    root: Path
    servers: list[Server] = field(default_factory=list)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    @classmethod
    def start(cls, redis_url: str | None = None, database_url: str | None = None) -> Stack:
        """Start Redis and PostgreSQL (unless given by URL) and migrate."""
        root = Path(tempfile.mkdtemp(prefix="bricqs-bench-"))
        stack = cls(redis_url or "", database_url or "", root)
        try:
            if not redis_url:
                stack.servers.append(start_redis(root / "redis"))
                stack.redis_url = stack.servers[-1].url
            if not database_url:
                stack.servers.append(start_postgres(root / "postgres", fsync=True))
                stack.database_url = stack.servers[-1].url
            migrate(stack.database_url)
        except BaseException:
            stack.close()
            raise
        return stack

    # -- tenants -----------------------------------------------------------------------

    def project(self, name: str, rules: Sequence[tuple[str, dict[str, Any]]] = ()) -> Project:
        """A new project with a live key and `rules` (api segment, definition) active."""

        async def create() -> Project:
            async with await psycopg.AsyncConnection.connect(
                self.database_url, autocommit=True
            ) as conn:
                project = await tenants.create_project(conn, name)
                _, key = await tenants.create_key(conn, project.project_id, "live", scopes=SCOPES)
                tenant = Tenant(project.project_id, "live")
                for segment, raw in rules:
                    kind, schema = KINDS[segment]
                    parsed = parse_definition(schema, raw)
                    assert not isinstance(parsed, list), (raw, parsed)
                    body = msgspec.json.encode(parsed).decode()
                    await create_definition(conn, tenant, kind, parsed.code, "active", body)
                return Project(project.project_id, key)

        return asyncio.run(create())

    def stored_events(self, project_id: str) -> int:
        """How many events of the project PostgreSQL holds."""
        with psycopg.connect(self.database_url, autocommit=True) as db:
            row = db.execute(
                "SELECT count(*) FROM events WHERE project_id = %s", (project_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def reset_stream(self) -> None:
        """Drop the event stream (and its group), so a phase starts with an empty queue."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            client.delete(stream_key(0))
        finally:
            client.close()

    # -- services ----------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a service pointed at this stack's servers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
        env.update(
            {
                "REDIS_URL": self.redis_url,
                "DATABASE_URL": self.database_url,
                "LOG_LEVEL": "WARNING",
                # A PYTHONPATH given to the bench comes first (an A/B run points it at
                # another tree), then the repository, for `bench.bare_asgi`.
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [os.environ.get("PYTHONPATH"), str(REPO)])
                ),
            }
        )
        env.update(extra)
        return env

    def granian(self, target: str, **extra: str) -> tuple[int, subprocess.Popen[bytes]]:
        """Serve an ASGI app factory or app under Granian, one worker, as `make run` does."""
        port = free_port()
        factory = ["--factory"] if target.endswith(":create_app") else []
        child = subprocess.Popen(
            [
                str(BIN / "granian"),
                *("--interface", "asgi", *factory, "--host", "127.0.0.1"),
                *("--port", str(port), "--workers", "1", "--no-access-log"),
                target,
            ],
            env=self.env(**extra),
            cwd=REPO,
            stdout=self._log(target),
            stderr=subprocess.STDOUT,
        )
        self.children.append(child)
        self._started(f"http://127.0.0.1:{port}/health/ready", child)
        return port, child

    def processor(self, **extra: str) -> tuple[int, subprocess.Popen[bytes]]:
        """Start one `bricqs-processor`; returns its metrics port."""
        port = free_port()
        child = subprocess.Popen(
            [str(BIN / "bricqs-processor")],
            env=self.env(METRICS_PORT=str(port), **extra),
            stdout=self._log("processor"),
            stderr=subprocess.STDOUT,
        )
        self.children.append(child)
        self._started(f"http://127.0.0.1:{port}/health/ready", child)
        return port, child

    def _started(self, url: str, child: subprocess.Popen[bytes]) -> None:
        try:
            wait_http(url, child)
        except RuntimeError as exc:
            self.logs[-1].flush()
            tail = Path(self.logs[-1].name).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{exc}; its output ends with:\n{tail}") from None

    def _log(self, name: str) -> IO[bytes]:
        """A log file for a service's output (printed if it fails to start)."""
        self.logs.append(open(self.root / f"{name.replace(':', '_')}.log", "ab"))  # noqa: SIM115
        return self.logs[-1]

    def stop(self, child: subprocess.Popen[bytes]) -> None:
        """Stop one service (SIGTERM, then SIGKILL after 30 s)."""
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if child in self.children:
            self.children.remove(child)

    def close(self) -> None:
        """Stop every service and server started here and remove their data."""
        for child in list(self.children):
            self.stop(child)
        for server in reversed(self.servers):
            server.stop()
        for log in self.logs:
            log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until `url` answers 200, failing early if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 (loopback)
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {timeout} s")


def fetch(url: str) -> str:
    """GET a loopback URL's text."""
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (loopback)
        return str(answer.read().decode())
