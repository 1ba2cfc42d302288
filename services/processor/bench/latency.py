"""End-to-end latency (ingest receipt -> fact committed) at a constant event rate.

    uv run python services/processor/bench/latency.py [--rate 1000] [--seconds 20]

Starts throwaway Redis and PostgreSQL (durable settings), the ingest service under
Granian (one worker) and one processor, then sends single events to the async endpoint
at a constant rate (open loop: a slow answer does not slow the sender down). Reports
percentiles of `stored_at - received_at` from PostgreSQL (stored_at is the batch
transaction's start, so this slightly understates) and the processor's own histogram
of receipt -> commit, whose bucket bounds the true p99 from above.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from bricqs.devstack import Server, free_port, start_postgres, start_redis
from bricqs.storage import tenants
from bricqs.storage.migrate import migrate


async def make_key(database_url: str) -> tuple[str, str]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        project = await tenants.create_project(conn, "bench")
        _, plaintext = await tenants.create_key(conn, project.project_id, "live")
        return project.project_id, plaintext


async def send(port: int, key: str, rate: int, seconds: int, connections: int = 64) -> list[float]:
    """Send rate x seconds events on schedule; each answer's latency from its scheduled
    time (so a stalled server is not hidden by a sender that waits for it).

    A minimal HTTP/1.1 client on keep-alive connections: Python HTTP clients cost about a
    millisecond of CPU per request, which on a small machine would starve the services
    being measured.
    """
    latencies: list[float] = []
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    def request(i: int) -> bytes:
        body = json.dumps(
            {
                "event_name": f"event_{i % 5}",
                "participant_id": f"user_{i % 500}",
                "properties": {"amount": i % 100, "plan": "pro"},
            }
        ).encode()
        head = (
            f"POST /api/v1/ingest/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"X-API-Key: {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (item := await queue.get()) is not None:
                i, scheduled = item
                writer.write(request(i))
                status = (await reader.readline()).split(b" ", 2)[1]
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if status != b"202":
                    raise RuntimeError(f"ingest answered {status!r}: {body!r}")
                latencies.append(time.perf_counter() - scheduled)
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter()
    for i in range(rate * seconds):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, scheduled))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies


def wait_http(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def histogram_bound(metrics: str, q: float) -> str:
    """The upper bound of the bucket holding quantile q of the lag histogram."""
    buckets = []
    for line in metrics.splitlines():
        if line.startswith("bricqs_processor_end_to_end_lag_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= q * total:
            return f"<= {le:g} s"
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="events per second")
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bricqs-bench-"))
    servers: list[Server] = [start_redis(root / "redis"), start_postgres(root / "postgres")]
    redis_server, postgres = servers
    children: list[subprocess.Popen[bytes]] = []
    try:
        migrate(postgres.url)
        project_id, key = asyncio.run(make_key(postgres.url))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")},
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": postgres.url,
            "LOG_LEVEL": "WARNING",
        }
        ingest_port, metrics_port = free_port(), free_port()
        children.append(
            subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "granian"),
                    *("--interface", "asgi", "--factory", "--host", "127.0.0.1"),
                    *("--port", str(ingest_port), "--workers", "1", "--no-access-log"),
                    "bricqs_ingest.app:create_app",
                ],
                env=env,
            )
        )
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "bricqs_processor.main"],
                env={**env, "METRICS_PORT": str(metrics_port)},
            )
        )
        base = f"http://127.0.0.1:{ingest_port}"
        wait_http(f"{base}/health/ready", children[0])
        wait_http(f"http://127.0.0.1:{metrics_port}/health/ready", children[1])

        latencies = asyncio.run(send(ingest_port, key, args.rate, args.seconds))
        n = args.rate * args.seconds
        with psycopg.connect(postgres.url, autocommit=True) as db:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                row = db.execute(
                    "SELECT count(*) FROM events WHERE project_id = %s", (project_id,)
                ).fetchone()
                if row and row[0] >= n:
                    break
                time.sleep(0.1)
            lags = [
                float(r[0])
                for r in db.execute(
                    "SELECT extract(epoch FROM stored_at - received_at) FROM events"
                    " WHERE project_id = %s",
                    (project_id,),
                ).fetchall()
            ]
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        ms = {
            "answer_p50": 1000 * quantile(latencies, 0.5),
            "answer_p99": 1000 * quantile(latencies, 0.99),
            "lag_p50": 1000 * quantile(lags, 0.5),
            "lag_p99": 1000 * quantile(lags, 0.99),
            "lag_max": 1000 * max(lags),
        }
        p50, p99 = histogram_bound(metrics, 0.5), histogram_bound(metrics, 0.99)
        print(f"{len(lags)} of {n} events stored; {args.rate} events/s for {args.seconds} s")
        print(
            "ingest answer (from the scheduled send):"
            f" p50 {ms['answer_p50']:.1f} ms, p99 {ms['answer_p99']:.1f} ms"
        )
        print(
            "end to end (receipt -> transaction start, PostgreSQL clock):"
            f" p50 {ms['lag_p50']:.1f} ms, p99 {ms['lag_p99']:.1f} ms, max {ms['lag_max']:.1f} ms"
        )
        print(f"end to end (receipt -> commit, processor histogram): p50 {p50}, p99 {p99}")
    finally:
        for child in children:
            child.terminate()
            child.wait(30)
        for server in servers:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
