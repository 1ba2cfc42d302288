"""Load generators: wrk for saturation, an open-loop client for a fixed offered rate, and
redis-benchmark for the queue's own ceiling.

Saturation is closed loop (wrk keeps N connections busy); a fixed rate is open loop:
requests leave on a schedule whatever the answers do, and each latency is counted from
the request's scheduled time, so a stalled server cannot hide behind a waiting sender
(the sender's own timer slack, below a millisecond, is included).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

WRK_SCRIPT = Path(__file__).with_name("wrk.lua")


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured; latencies in milliseconds."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    """Answers with an unexpected status, plus socket errors and unanswered requests."""
    offered_rate: float | None = None
    """Requests per second sent on schedule (open loop); None for saturation."""

    @property
    def rate(self) -> float:
        """Requests answered per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self, events_per_request: int = 1) -> dict[str, Any]:
        """JSON form, with rates and events per second."""
        return {
            **asdict(self),
            "requests_per_second": round(self.rate, 1),
            "events_per_second": round(self.rate * events_per_request, 1),
        }


def wrk(
    port: int,
    path: str,
    key: str,
    bodies: Sequence[bytes],
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    paths_in_bodies: bool = False,
) -> LoadResult:
    """Keep `connections` busy for `seconds` with POSTs of `bodies` in turn, to `path`, or
    with `paths_in_bodies` each to the path its line starts with (`path body`)."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk not found; install it (Debian: apt-get install wrk)")
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl") as file:
        file.write(b"\n".join(bodies) + b"\n")
        file.flush()
        run = subprocess.run(
            [
                binary,
                *("-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s"),
                *("--timeout", "10s", "-s", str(WRK_SCRIPT)),
                f"http://127.0.0.1:{port}{path}",
                *("--", "-" if paths_in_bodies else path, key, file.name),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    line = next(x for x in reversed(run.stdout.splitlines()) if x.startswith("{"))
    raw = json.loads(line)
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        p999_ms=raw["p999_us"] / 1000,
        errors=raw["status_errors"] + raw["socket_errors"],
    )


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self, done: Callable[[_Connection, int], None]) -> None:
        self._done = done
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.scheduled = 0.0
        self.busy = False
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, request: bytes, scheduled: float) -> None:
        assert self.transport is not None
        self.scheduled, self.busy = scheduled, True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 17)
            length = int(head[at + 17 : stop if stop >= 0 else None])
        if len(self._buffer) < end + 4 + length:
            return
        del self._buffer[: end + 4 + length]
        self.busy = False
        self._done(self, int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


def http_request(port: int, path: str, key: str, body: bytes) -> bytes:
    """The bytes of one POST, built once and sent many times."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _open_loop(
    port: int,
    requests: Sequence[bytes],
    rate: float,
    seconds: float,
    connections: int,
    expect: int,
) -> LoadResult:
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []
    waiting: deque[tuple[float, bytes]] = deque()
    latencies: list[float] = []
    bad = 0
    last = 0.0
    total = max(1, int(rate * seconds))
    finished = loop.create_future()

    def done(conn: _Connection, status: int) -> None:
        nonlocal bad, last
        last = loop.time()
        latencies.append(last - conn.scheduled)
        if status != expect:
            bad += 1
        if waiting:
            scheduled, request = waiting.popleft()
            conn.send(request, scheduled)
        else:
            idle.append(conn)
        if len(latencies) == total and not finished.done():
            finished.set_result(None)

    pool: list[_Connection] = []
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: _Connection(done), "127.0.0.1", port)
        pool.append(conn)
    idle.extend(pool)
    start = loop.time() + 0.01
    i = 0
    while i < total:
        # Send everything due, then sleep until the next one is: one wake-up per
        # millisecond or so rather than one per request, so the sender stays cheap.
        now = loop.time()
        while i < total and start + i / rate <= now:
            scheduled, request = start + i / rate, requests[i % len(requests)]
            if idle:
                idle.pop().send(request, scheduled)
            else:
                waiting.append((scheduled, request))
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(finished, timeout=30)
    elapsed = (last if latencies else loop.time()) - start
    for conn in pool:
        if conn.transport is not None:
            conn.transport.close()
    latencies.sort()
    missing = total - len(latencies)

    def q(p: float) -> float:
        return (
            1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0
        )

    return LoadResult(
        requests=len(latencies),
        seconds=max(elapsed, 1e-9),
        p50_ms=q(0.5),
        p99_ms=q(0.99),
        p999_ms=q(0.999),
        errors=bad + missing,
        offered_rate=rate,
    )


def open_loop(
    port: int,
    path: str,
    key: str,
    bodies: Sequence[bytes],
    *,
    rate: float,
    seconds: float,
    connections: int = 64,
    expect: int = 202,
) -> LoadResult:
    """Send `rate` requests per second for `seconds`, on schedule; `expect` is the status
    every answer should have."""
    requests = [http_request(port, path, key, body) for body in bodies]
    return asyncio.run(_open_loop(port, requests, rate, seconds, connections, expect))


def redis_xadd(
    port: int, *, db: int = 0, requests: int, pipeline: int, payload_bytes: int
) -> dict[str, Any]:
    """redis-benchmark XADD (one field of `payload_bytes`) with pipelining: the queue's
    ceiling on this machine. Returns ops/s and its latency figures."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark not found; it comes with redis-server (apt)")
    run = subprocess.run(
        [
            binary,
            *("-h", "127.0.0.1", "-p", str(port), "-c", "50", "-n", str(requests)),
            *("--dbnum", str(db), "-P", str(pipeline), "--csv"),
            *("XADD", "bench:reference", "*", "e", "x" * payload_bytes),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    row = rows[-1]
    return {
        "requests": requests,
        "pipeline": pipeline,
        "payload_bytes": payload_bytes,
        "ops_per_second": float(row["rps"]),
        "p50_ms": float(row.get("p50_latency_ms") or 0),
        "p99_ms": float(row.get("p99_latency_ms") or 0),
    }
