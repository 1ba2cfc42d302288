"""A tiny HTTP server for the probes and scrapes of a worker with no other HTTP surface
(the processor, the dispatcher): `/metrics`, `/health/live`, `/health/ready`.

Live answers what the worker's own `live` says (a stale heartbeat: 503); ready answers
503 when a dependency does not answer or the worker is stopping. A few lines on
asyncio's streams do instead of a web framework: each request gets one response and the
connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

log = logging.getLogger("bricqs.probes")

Check = Callable[[], Awaitable[Any]]
Liveness = Callable[[], tuple[int, dict[str, Any]]]
Metrics = Callable[[], tuple[bytes, str]]
REQUEST_TIMEOUT = 5.0
CHECK_TIMEOUT = 2.0
_json = msgspec.json.Encoder()


def always_alive() -> tuple[int, dict[str, Any]]:
    """Liveness of a worker with no loop to watch."""
    return 200, {"status": "ok"}


class ProbeServer:
    """Serves metrics and health on one port."""

    def __init__(
        self,
        host: str,
        port: int,
        checks: Mapping[str, Check],
        *,
        metrics: Metrics,
        live: Liveness = always_alive,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.host = host
        self.port = port
        self._checks = checks
        self._metrics = metrics
        self._live = live
        self._stopping = stopping
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (raises OSError when the port is taken)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def ready(self) -> tuple[int, dict[str, Any]]:
        """Readiness: every dependency answers (and we are not shutting down)."""
        results: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                async with asyncio.timeout(CHECK_TIMEOUT):
                    await check()
                results[name] = "ok"
            except Exception as exc:  # any failure means not ready; say which and why
                results[name] = f"error: {type(exc).__name__}"
        ok = all(v == "ok" for v in results.values()) and not self._stopping()
        status = "ok" if ok else ("stopping" if self._stopping() else "unavailable")
        return (200 if ok else 503), {"status": status, "checks": results}

    async def _respond(self, method: str, path: str) -> tuple[int, bytes, str]:
        if method not in ("GET", "HEAD"):
            return 405, b'{"status":"method not allowed"}', "application/json"
        if path == "/metrics":
            body, content_type = self._metrics()
            return 200, body, content_type
        if path == "/health/live":
            status, document = self._live()
            return status, _json.encode(document), "application/json"
        if path == "/health/ready":
            status, document = await self.ready()
            return status, _json.encode(document), "application/json"
        return 404, b'{"status":"not found"}', "application/json"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing here needs them
                parts = request_line.decode("latin-1").split()
                if len(parts) < 2:
                    return
                method, target = parts[0], parts[1]
                status, body, content_type = await self._respond(method, target.split("?")[0])
                head = (
                    f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                    f"Content-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
                await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError) as exc:
            log.debug("probe request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
