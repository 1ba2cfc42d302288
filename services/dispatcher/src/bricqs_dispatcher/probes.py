"""`/metrics`, `/health/live` and `/health/ready` of the dispatcher, on one small port.

The dispatcher serves nothing else over HTTP, so a handler on asyncio's streams does: one
request per connection, answered and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

Check = Callable[[], Awaitable[Any]]
CHECK_TIMEOUT = 2.0
"""Bound on each readiness check, in seconds."""


class ProbeServer:
    """Answers probes and scrapes."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        alive: Callable[[], bool],
        stopping: Callable[[], bool],
    ) -> None:
        self._checks = checks
        self._alive = alive
        self._stopping = stopping
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen (OSError when the port is taken)."""
        self._server = await asyncio.start_server(self._serve, host, port)

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()

    async def answer(self, path: str) -> tuple[int, bytes, str]:
        """(status, body, content type) for a GET of `path`."""
        if path == "/metrics":
            return 200, generate_latest(), CONTENT_TYPE_LATEST
        if path == "/health/live":
            ok = self._alive()
            return (200 if ok else 503), _status("ok" if ok else "stalled"), "application/json"
        if path == "/health/ready":
            checks = {}
            for name, check in self._checks.items():
                try:
                    async with asyncio.timeout(CHECK_TIMEOUT):
                        await check()
                    checks[name] = "ok"
                except Exception as exc:  # any failure means not ready; say which
                    checks[name] = f"error: {type(exc).__name__}"
            ok = all(v == "ok" for v in checks.values()) and not self._stopping()
            body = {"status": "ok" if ok else "unavailable", "checks": checks}
            return (200 if ok else 503), msgspec.json.encode(body), "application/json"
        return 404, _status("not found"), "application/json"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5.0):
                request_line = (await reader.readline()).decode("latin-1").split()
                status, body, content_type = await self.answer(
                    request_line[1].split("?")[0] if len(request_line) > 1 else ""
                )
                writer.write(
                    f"HTTP/1.1 {status} -\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _status(status: str) -> bytes:
    return msgspec.json.encode({"status": status})
