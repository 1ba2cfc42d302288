"""Webhook benchmarks (issue 15).

    uv run --locked python -m bench.webhooks [--events N] [--pairs N] [--messages N]

- outbox: the processor's drain rate with 20 rules and one `*` endpoint subscribed,
  against none, in alternating pairs (the machine is shared: compare within a pair);
- deliveries: messages per second one dispatcher delivers to a local receiver that
  answers at once (a minimal HTTP/1.1 keep-alive responder in this process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.processor import drains_with_and_without
from bench.stack import BIN, Project, Stack
from bricqs.ids import new_fact_id
from bricqs.schemas import Fact
from bricqs.storage.events import insert_facts
from bricqs.storage.tenants import Tenant
from bricqs.storage.webhook_outbox import enqueue_outcomes
from bricqs.storage.webhooks import create_endpoint
from bricqs.webhook_secrets import new_key, secret_box

# Secrets sealed as in production: the dispatcher decrypts one per attempt.
KEYS = f"bench:{new_key()}"


def subscribe_all(database_url: str, url: str) -> Any:
    """A function giving a project one endpoint subscribed to every outcome."""

    def prepare(project: Project) -> None:
        async def create() -> None:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
                await create_endpoint(
                    c,
                    Tenant(project.project_id, "live"),
                    url=url,
                    event_types=["*"],
                    description="bench",
                    enabled=True,
                    box=secret_box(KEYS),
                )

        asyncio.run(create())

    return prepare


def outbox_overhead(stack: Stack, *, events: int, pairs: int) -> dict[str, Any]:
    """Drain rates with and without a `*` endpoint, alternating which goes first."""
    prepare = subscribe_all(stack.database_url, "https://example.com/hook")
    return drains_with_and_without(
        stack, events=events, pairs=pairs, prepare=prepare, name="star_endpoint"
    )


class FastReceiver:
    """An HTTP/1.1 keep-alive responder that answers 204 at once and counts requests."""

    def __init__(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.last = 0.0
        self.port = 0
        self._ready = threading.Event()

    def start(self) -> None:
        threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True).start()
        self._ready.wait(10)

    async def _serve(self) -> None:
        receiver = self

        class Protocol(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport
                self.buffer = b""

            def data_received(self, data: bytes) -> None:
                self.buffer += data
                while True:
                    head_end = self.buffer.find(b"\r\n\r\n")
                    if head_end < 0:
                        return
                    head = self.buffer[:head_end].lower()
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    end = head_end + 4 + length
                    if len(self.buffer) < end:
                        return
                    self.buffer = self.buffer[end:]
                    receiver.count += 1
                    now = time.monotonic()
                    receiver.first = receiver.first or now
                    receiver.last = now
                    self.transport.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")

        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await server.serve_forever()


def deliveries(stack: Stack, *, messages: int) -> dict[str, Any]:
    """Messages per second one dispatcher delivers, first request to last."""
    receiver = FastReceiver()
    receiver.start()
    project = stack.project("webhook-deliveries")
    tenant = Tenant(project.project_id, "live")

    async def owe() -> None:
        async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
            await create_endpoint(
                conn,
                tenant,
                url=f"http://127.0.0.1:{receiver.port}/hook",
                event_types=["*"],
                description="bench",
                enabled=True,
                box=secret_box(KEYS),
            )
            now = datetime.now(UTC)
            for start in range(0, messages, 5_000):
                facts = [
                    Fact(
                        fact_id=new_fact_id(),
                        fact_type="points.awarded",
                        project_id=project.project_id,
                        environment="live",
                        participant_id=f"p{n}",
                        event_id=f"evt_bench{n}",
                        properties={"amount": 1, "source": "bench", "balance": 1},
                        occurred_at=now,
                    )
                    for n in range(start, min(start + 5_000, messages))
                ]
                await insert_facts(conn, facts)
                await enqueue_outcomes(conn, tenant, facts)
            await conn.commit()

    asyncio.run(owe())
    child = subprocess.Popen(
        [str(BIN / "bricqs-dispatcher")],
        env=stack.env(
            WEBHOOKS_ALLOW_PRIVATE="true",
            METRICS_PORT="0",
            POLL_INTERVAL_MS="50",
            WEBHOOK_SECRETS_KEYS=KEYS,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    stack.children.append(child)
    deadline = time.monotonic() + 600
    try:
        while receiver.count < messages:
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dispatcher stopped after {receiver.count} deliveries")
            time.sleep(0.05)
    finally:
        stack.stop(child)
    assert receiver.first is not None
    elapsed = receiver.last - receiver.first
    return {
        "messages": messages,
        "received": receiver.count,
        "seconds": round(elapsed, 3),
        "deliveries_per_second": round(messages / elapsed, 1) if elapsed > 0 else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    """Run both measures and print them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per drain")
    parser.add_argument("--pairs", type=int, default=3, help="drain pairs (without, with)")
    parser.add_argument("--messages", type=int, default=20_000, help="messages to deliver")
    parser.add_argument("--only", default="outbox,deliveries")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    results: dict[str, Any] = {}
    stack = Stack.start()
    try:
        if "deliveries" in parts:
            results["deliveries"] = deliveries(stack, messages=args.messages)
        if "outbox" in parts:
            results["outbox"] = outbox_overhead(stack, events=args.events, pairs=args.pairs)
    finally:
        stack.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
