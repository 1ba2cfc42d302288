"""A small HTTP/1.1 client for webhook POSTs: keep-alive connections pooled per checked
address, no redirects, no proxies, a bounded read of the answer.

Why not httpx: under the benchmark about half the dispatcher's CPU went to httpcore's
pool bookkeeping, which capped one replica near 400 deliveries/s. A webhook needs only
one request shape and two facts of the answer (status, Retry-After), so this does that
and no more. A connection goes to the address `webhook_targets` checked, with TLS
verifying the URL's host name (SNI and certificate), so a name that resolves elsewhere
later cannot redirect a pooled connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from bricqs.webhook_targets import Target

HEAD_LIMIT = 64 * 1024
"""Most bytes of a response's status line and headers."""
IDLE_SECONDS = 30.0
"""A pooled connection unused this long is closed rather than reused (receivers close
theirs after a while; a write into a closed one costs a retry)."""


class ProtocolError(OSError):
    """The receiver's answer is not HTTP/1.1 this client reads."""


@dataclass
class Answer:
    """What an attempt keeps of a response."""

    status: int
    retry_after: str | None


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def usable(self, now: float) -> bool:
        return not self.reader.at_eof() and now - self.idle_since < IDLE_SECONDS

    def close(self) -> None:
        self.writer.close()


PoolKey = tuple[str, str, int, str]


class Sender:
    """POSTs to webhook targets over pooled keep-alive connections."""

    def __init__(
        self,
        *,
        response_limit_bytes: int,
        max_idle_per_target: int,
        user_agent: str = "bricqs-webhooks/1",
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = response_limit_bytes
        self._max_idle = max_idle_per_target
        self._agent = user_agent
        self._ssl = ssl_context or ssl.create_default_context()
        self._clock = clock
        self._idle: defaultdict[PoolKey, deque[_Connection]] = defaultdict(deque)
        self.connections_opened = 0
        """Connections opened so far (tests check that keep-alive reuses them)."""

    async def post(self, target: Target, headers: dict[str, str], body: bytes) -> Answer:
        """POST `body` to the target; a pooled connection the receiver closed meanwhile is
        replaced once (the request never reached it)."""
        key = (target.scheme, target.address, target.port, target.host)
        request = self._request(target, headers, body)
        connection = self._take(key)
        if connection is not None:
            try:
                return await self._exchange(key, connection, request)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # closed by the receiver while idle: try on a fresh connection
        return await self._exchange(key, await self._open(target), request)

    def prune(self) -> int:
        """Close the pooled connections idle too long or closed by their receiver (an
        endpoint no longer sent to would otherwise keep them); how many."""
        now = self._clock()
        closed = 0
        for key, idle in list(self._idle.items()):
            for connection in [c for c in idle if not c.usable(now)]:
                idle.remove(connection)
                connection.close()
                closed += 1
            if not idle:
                del self._idle[key]
        return closed

    @property
    def pooled(self) -> int:
        """Idle connections kept for reuse."""
        return sum(len(idle) for idle in self._idle.values())

    async def aclose(self) -> None:
        """Close every pooled connection."""
        for idle in self._idle.values():
            while idle:
                idle.popleft().close()

    def _take(self, key: PoolKey) -> _Connection | None:
        idle = self._idle.get(key)
        now = self._clock()
        while idle:
            connection = idle.pop()
            if connection.usable(now):
                return connection
            connection.close()
        return None

    def _give_back(self, key: PoolKey, connection: _Connection) -> None:
        idle = self._idle[key]
        if len(idle) >= self._max_idle:
            connection.close()
            return
        connection.idle_since = self._clock()
        idle.append(connection)

    async def _open(self, target: Target) -> _Connection:
        tls = target.scheme == "https"
        reader, writer = await asyncio.open_connection(
            target.address,
            target.port,
            ssl=self._ssl if tls else None,
            server_hostname=target.host if tls else None,
            limit=HEAD_LIMIT,
        )
        self.connections_opened += 1
        return _Connection(reader, writer)

    def _request(self, target: Target, headers: dict[str, str], body: bytes) -> bytes:
        default_port = 443 if target.scheme == "https" else 80
        name = f"[{target.host}]" if ":" in target.host else target.host  # IPv6 literal
        host = name if target.port == default_port else f"{name}:{target.port}"
        lines = [f"POST {target.path} HTTP/1.1", f"host: {host}", f"user-agent: {self._agent}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"content-length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def _exchange(self, key: PoolKey, connection: _Connection, request: bytes) -> Answer:
        """Send, read the answer; the connection goes back to the pool only when the
        answer was read to its end and both sides keep it alive."""
        reusable = False
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            status, fields, version = await _read_head(connection.reader)
            reusable = await self._read_body(connection.reader, status, fields)
            reusable = reusable and _keeps_alive(version, fields)
            return Answer(status, fields.get("retry-after"))
        finally:
            if reusable:
                self._give_back(key, connection)
            else:
                connection.close()

    async def _read_body(
        self, reader: asyncio.StreamReader, status: int, fields: dict[str, str]
    ) -> bool:
        """Read the body, at most the limit; whether the connection is at a message
        boundary afterwards (a body cut short or delimited by the close is not)."""
        if status in (204, 304):
            return True
        if "chunked" in fields.get("transfer-encoding", "").lower():
            return await self._read_chunked(reader)
        length = fields.get("content-length")
        if length is None:
            await reader.read(self._limit)  # delimited by the close
            return False
        try:
            size = int(length)
        except ValueError as exc:
            raise ProtocolError(f"bad content-length {length!r}") from exc
        if size > self._limit:
            await reader.read(self._limit)
            return False
        await reader.readexactly(size)
        return True

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bool:
        read = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise ProtocolError("bad chunk size") from exc
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return True
            read += size
            if read > self._limit:
                return False
            await reader.readexactly(size + 2)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], str]:
    """(status, lower-cased header fields, HTTP version) of the final response, skipping
    informational ones."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise ProtocolError("the response's headers are too long") from exc
        status_line, *lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:
            continue
        fields: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        return status, fields, parts[0]


def _keeps_alive(version: str, fields: dict[str, str]) -> bool:
    connection = fields.get("connection", "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection
