"""`make run` (`bricqs-dev`): the whole system in the foreground, Ctrl-C stops it.

Its own Redis and PostgreSQL (unless `REDIS_URL`/`DATABASE_URL` are set), migrated, with a
demo project; then ingest and the api under Granian, the processor and the webhook
dispatcher, as child processes. Webhooks may target loopback and private addresses here
(`WEBHOOKS_ALLOW_PRIVATE=true` unless set otherwise), to reach a receiver on this machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bricqs.local_stack import LocalStack, stack_file, write_local_stack
from bricqs.storage.migrate import MigrationError, migrate
from bricqs_devstack.demo import ensure_demo_project
from bricqs_devstack.servers import DevStackError, Server, start_postgres, start_redis

DATA_DIR = Path(os.environ.get("BRICQS_DATA_DIR", ".data"))
DEV_REDIS_PORT = int(os.environ.get("DEV_REDIS_PORT", "16379"))
DEV_POSTGRES_PORT = int(os.environ.get("DEV_POSTGRES_PORT", "15432"))
INGEST_PORT = int(os.environ.get("INGEST_PORT", "8000"))
API_PORT = int(os.environ.get("API_PORT", "8001"))
SYNC_PORT = int(os.environ.get("SYNC_PORT", "8002"))
# The processor's probes take METRICS_PORT (9100); the import processor's and the
# dispatcher's get ports of their own, or a METRICS_PORT set for the processor would be
# taken twice.
IMPORT_METRICS_PORT = int(os.environ.get("IMPORT_METRICS_PORT", "9101"))
DISPATCHER_METRICS_PORT = int(os.environ.get("DISPATCHER_METRICS_PORT", "9102"))
INGEST_WORKERS = int(os.environ.get("INGEST_WORKERS", "1"))
EVENT_LOOP = "uvloop"
"""Granian's event loop for ingest and the api, as the images run them (Dockerfile)."""


def service_commands(bin_dir: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    """Each service's name, command and the environment it adds.

    Ingest serves every endpoint on INGEST_PORT (one address for the README and the
    client); a second ingest on SYNC_PORT serves sync events alone, on workers of its
    own, so sync traffic sent there never delays the async endpoints (in Kubernetes the
    ingress routes the sync path to its own Deployment the same way). Likewise one
    processor reads the live streams and another the historical ones (imports), so an
    import never shares a process with live traffic (docs/import.md).
    """
    granian = [
        *(str(bin_dir / "granian"), "--interface", "asgi", "--factory", "--host", "127.0.0.1"),
        *("--loop", EVENT_LOOP),
    ]

    def serve(port: int, workers: int, target: str) -> list[str]:
        return [
            *granian,
            *("--port", str(port), "--workers", str(workers)),
            "--no-access-log",
            target,
        ]

    return [
        ("ingest", serve(INGEST_PORT, INGEST_WORKERS, "bricqs_ingest.app:create_app"), {}),
        (
            "ingest-sync",
            serve(SYNC_PORT, 1, "bricqs_ingest.app:create_app"),
            {"INGEST_ENDPOINTS": "sync"},
        ),
        ("processor", [str(bin_dir / "bricqs-processor")], {"PROCESSOR_STREAMS": "live"}),
        (
            "processor-import",
            [str(bin_dir / "bricqs-processor")],
            {
                "PROCESSOR_STREAMS": "historical",
                "PROCESSOR_NICE": "10",
                "METRICS_PORT": str(IMPORT_METRICS_PORT),
            },
        ),
        (
            "dispatcher",
            [str(bin_dir / "bricqs-dispatcher")],
            {"METRICS_PORT": str(DISPATCHER_METRICS_PORT)},
        ),
        ("api", serve(API_PORT, 1, "bricqs_api.app:create_app"), {}),
    ]


def main() -> int:
    """Run Redis and PostgreSQL (unless given by URL), migrate, seed, serve; Ctrl-C stops."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            servers.append(start_redis(DATA_DIR / "redis", DEV_REDIS_PORT))
            redis_url = servers[-1].url
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            servers.append(start_postgres(DATA_DIR / "postgres", DEV_POSTGRES_PORT))
            database_url = servers[-1].url
        applied = migrate(database_url)
        keys = ensure_demo_project(database_url, DATA_DIR / "demo-keys.json")
        announced = write_local_stack(
            LocalStack(database_url=database_url, redis_url=redis_url), DATA_DIR
        )

        env = {
            "WEBHOOKS_ALLOW_PRIVATE": "true",
            **os.environ,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
        }
        bin_dir = Path(sys.executable).parent
        for name, command, extra in service_commands(bin_dir):
            child_env = {**env, **extra}
            # HTTP services may run several workers: they share metrics through files.
            if name not in ("processor", "processor-import", "dispatcher"):
                metrics_dir = DATA_DIR / "metrics" / name
                shutil.rmtree(metrics_dir, ignore_errors=True)  # stale files skew counters
                metrics_dir.mkdir(parents=True)
                child_env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
            children.append((name, subprocess.Popen(command, env=child_env)))

        print(
            f"\nBricqs is running (migrations applied: {len(applied)}).\n"
            f"  ingest     http://127.0.0.1:{INGEST_PORT}/api/v1/ingest/events\n"
            f"  sync only  http://127.0.0.1:{SYNC_PORT}/api/v1/ingest/events/sync\n"
            f"  services   {', '.join(name for name, _ in children)}\n"
            f"  redis      {redis_url}\n"
            f"  postgres   {database_url}\n"
            f"  project    {keys['project_id']}\n"
            f"  live key   {keys['live_key']}\n"
            f"  test key   {keys['test_key']}\n"
            f"  (keys saved in {DATA_DIR / 'demo-keys.json'})\n"
            f"  admin      uv run bricqs-admin project list  (servers found in {announced})\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    print(f"{name} exited with code {child.returncode}; stopping", flush=True)
                    stopping = True
            time.sleep(0.2)
        return 0
    except (DevStackError, MigrationError, subprocess.CalledProcessError) as exc:
        print(f"could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        stack_file(DATA_DIR).unlink(missing_ok=True)
        for _, child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for _, child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        for server in reversed(servers):
            server.stop()
