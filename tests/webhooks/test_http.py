"""The dispatcher's HTTP/1.1 client against raw receivers on loopback: keep-alive reuse,
a pooled connection the receiver closed, bodies chunked, over the limit, or ended by
the close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from bricqs.webhook_targets import Target
from bricqs_dispatcher.http import IDLE_SECONDS, Sender

# What the receiver answers its nth request (0-based): raw bytes, then whether to close.
Script = Callable[[int], tuple[bytes, bool]]

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


@dataclass
class RawReceiver:
    """Reads whole requests (head and content-length body), answers with raw bytes."""

    script: Script
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                answer, close = self.script(len(self.requests) - 1)
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


async def exchange(
    script: Script, posts: int, limit: int = 1024
) -> tuple[RawReceiver, Sender, list[tuple[int, str | None]]]:
    receiver = RawReceiver(script)
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = Target("http", "hooks.example", port, "/in?x=1", "127.0.0.1")
    sender = Sender(response_limit_bytes=limit, max_idle_per_target=4)
    answers = []
    try:
        for n in range(posts):
            answer = await sender.post(target, {"webhook-id": f"m{n}"}, b'{"n": %d}' % n)
            answers.append((answer.status, answer.retry_after))
    finally:
        await sender.aclose()
        server.close()
        await server.wait_closed()
    return receiver, sender, answers


def test_posts_reuse_one_keep_alive_connection() -> None:
    receiver, sender, answers = asyncio.run(exchange(lambda n: (NO_CONTENT, False), 50))
    assert answers == [(204, None)] * 50
    assert sender.connections_opened == receiver.connections == 1
    first = receiver.requests[0]
    assert first.startswith(b"POST /in?x=1 HTTP/1.1\r\n")
    assert b"\r\nhost: hooks.example:" in first
    assert b"\r\nwebhook-id: m0\r\n" in first
    assert first.endswith(b'\r\n\r\n{"n": 0}')


def test_a_connection_the_receiver_closed_is_replaced_without_losing_the_post() -> None:
    # Answers without `connection: close`, then closes: the pooled connection is dead.
    receiver, sender, answers = asyncio.run(exchange(lambda n: (NO_CONTENT, True), 5))
    assert answers == [(204, None)] * 5
    assert len(receiver.requests) == 5
    assert sender.connections_opened == receiver.connections == 5


def test_connection_close_is_honoured() -> None:
    closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    receiver, sender, answers = asyncio.run(exchange(lambda n: (closing, True), 3))
    assert answers == [(200, None)] * 3
    assert sender.connections_opened == receiver.connections == 3


def test_a_chunked_body_is_read_and_the_connection_kept() -> None:
    chunked = (
        b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n"
    )
    receiver, sender, answers = asyncio.run(exchange(lambda n: (chunked, False), 3))
    assert answers == [(429, "7")] * 3
    assert sender.connections_opened == receiver.connections == 1


def test_a_body_over_the_limit_is_cut_and_its_connection_dropped() -> None:
    big = b"HTTP/1.1 500 Oops\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000
    receiver, sender, answers = asyncio.run(exchange(lambda n: (big, False), 3, limit=100))
    assert answers == [(500, None)] * 3
    assert sender.connections_opened == receiver.connections == 3  # never reused mid-body


def test_a_body_ended_by_the_close_and_informational_answers() -> None:
    untold = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nuntil the close"
    receiver, sender, answers = asyncio.run(exchange(lambda n: (untold, True), 2))
    assert answers == [(200, None)] * 2
    assert sender.connections_opened == receiver.connections == 2


def test_idle_connections_past_their_time_are_pruned() -> None:
    now = [0.0]

    async def scenario() -> tuple[int, int, int]:
        receiver = RawReceiver(lambda n: (NO_CONTENT, False))
        server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0)
        target = Target(
            "http", "hooks.example", server.sockets[0].getsockname()[1], "/", "127.0.0.1"
        )
        sender = Sender(response_limit_bytes=1024, max_idle_per_target=4, clock=lambda: now[0])
        try:
            await sender.post(target, {}, b"{}")
            kept = sender.pooled
            now[0] = IDLE_SECONDS - 1
            early = sender.prune()
            now[0] = IDLE_SECONDS + 1
            return kept, early, sender.prune()
        finally:
            await sender.aclose()
            server.close()
            await server.wait_closed()

    kept, early, late = asyncio.run(scenario())
    assert (kept, early, late) == (1, 0, 1)
