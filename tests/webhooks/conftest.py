"""Webhook fixtures: a real receiver on loopback, a clock the test moves, a dispatcher
running in a thread of the test process, and a story whose api accepts loopback URLs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from bricqs.webhook_secrets import new_key
from bricqs_devstack.servers import Server
from bricqs_dispatcher.delivery import GATHER_SECONDS, Dispatcher
from bricqs_dispatcher.main import make_pool, make_sender
from bricqs_dispatcher.settings import DispatcherSettings
from tests.conftest import Story, Tenant, api_client

SECRETS_KEYS = f"test:{new_key()}"
"""WEBHOOK_SECRETS_KEYS of the api and the dispatchers of these tests."""


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float


# What the receiver answers a path's nth request (0-based): status, headers, delay (s).
Behaviour = Callable[[int], tuple[int, dict[str, str], float]]


def answer(status: int = 200, headers: dict[str, str] | None = None, delay: float = 0.0) -> Any:
    """A behaviour answering every request the same way."""
    return lambda n: (status, headers or {}, delay)


@dataclass
class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 that records every request and answers per path."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def on(self, path: str, behaviour: Behaviour) -> str:
        self.behaviours[path] = behaviour
        return self.url(path)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    n = sum(1 for r in receiver.received if r.path == self.path)
                    receiver.received.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                        )
                    )
                status, headers, delay = receiver.behaviours.get(self.path, answer())(n)
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the dispatcher opens many connections at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


class MovableClock:
    """A clock that moves only when the test says."""

    def __init__(self) -> None:
        # Ahead of the database's clock, which stamps new messages as due from its now().
        self.now = datetime.now(UTC) + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class DispatcherThread:
    """A Dispatcher on its own event loop in a thread, with the test's clock."""

    def __init__(
        self,
        settings: DispatcherSettings,
        clock: Callable[[], datetime],
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.gather_seconds = gather_seconds
        self.loop = asyncio.new_event_loop()
        self.dispatcher: Dispatcher | None = None
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:
            self.error = exc
        finally:
            self.started.set()

    async def _serve(self) -> None:
        pool = make_pool(self.settings)
        await pool.open()
        sender = make_sender(self.settings)
        self.dispatcher = Dispatcher(
            self.settings,
            pool,
            sender,
            clock=self.clock,
            random_fraction=lambda: 0.5,
            gather_seconds=self.gather_seconds,
        )
        self.started.set()
        try:
            await self.dispatcher.run()
        finally:
            await sender.aclose()
            await pool.close()

    def wait_rounds(self, count: int = 2) -> None:
        """Until `count` more rounds have completed: whatever they would have sent is sent."""
        assert self.dispatcher is not None
        target = self.dispatcher.rounds + count
        deadline = time.monotonic() + 20
        while self.dispatcher.rounds < target:
            assert time.monotonic() < deadline, "the dispatcher made no round"
            time.sleep(0.01)

    def __enter__(self) -> DispatcherThread:
        self.thread.start()
        self.started.wait(20)
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.dispatcher is not None
        self.loop.call_soon_threadsafe(self.dispatcher.stop)
        self.thread.join(30)
        self.loop.close()
        assert self.error is None, self.error


def dispatcher_settings(database_url: str, **overrides: Any) -> DispatcherSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "webhooks_allow_private": True,
        "webhook_secrets_keys": SECRETS_KEYS,
        "poll_interval_ms": 20,
        "attempt_timeout_seconds": 1.0,
        "lease_seconds": 30.0,
        "metrics_port": 0,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return DispatcherSettings(**values)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def open_api(redis_server: Server, postgres_server: Server) -> Iterator[TestClient[Any]]:
    """The api, accepting webhook URLs on loopback (as local runs and tests do), sealing
    secrets with the tests' keys."""
    with api_client(
        redis_server.url,
        postgres_server.url,
        webhooks_allow_private=True,
        webhook_secrets_keys=SECRETS_KEYS,
    ) as client:
        yield client


@pytest.fixture
def hooks(open_api: TestClient[Any], sync_ingest: TestClient[Any], tenant: Tenant) -> Story:
    return Story(open_api, sync_ingest, tenant, tenant.live_key)


def subscribe(story: Story, url: str, event_types: list[str] | None = None) -> dict[str, Any]:
    """Create an endpoint; its body, secret included."""
    response = story.api.post(
        "/api/v1/gamify/admin/webhooks",
        headers=story.headers,
        json={"url": url, "event_types": event_types or ["*"]},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


@dataclass
class Scene:
    """What most webhook tests use together: the tenant's story, the receiver, the
    database, and dispatchers on the test's clock."""

    hooks: Story
    receiver: Receiver
    database_url: str
    db: psycopg.Connection[Any]
    clock: MovableClock

    def dispatcher(
        self, gather_seconds: float = GATHER_SECONDS, **overrides: Any
    ) -> DispatcherThread:
        """A dispatcher (start it with `with`) on this scene's database and clock."""
        return DispatcherThread(
            dispatcher_settings(self.database_url, **overrides), self.clock, gather_seconds
        )

    def subscribe(self, path: str, behaviour: Behaviour, types: list[str] | None = None) -> str:
        """An endpoint for `path` on the receiver, answering with `behaviour`; its id."""
        return str(subscribe(self.hooks, self.receiver.on(path, behaviour), types)["endpoint_id"])

    def statuses(self, endpoint_id: str) -> list[tuple[str, int]]:
        """(status, attempts) of the endpoint's messages, by message id."""
        rows = self.db.execute(
            "SELECT status, attempts FROM webhook_messages WHERE endpoint_id = %s ORDER BY fact_id",
            (endpoint_id,),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]


@pytest.fixture
def scene(
    hooks: Story,
    receiver: Receiver,
    postgres_server: Server,
    db: psycopg.Connection[Any],
    clock: MovableClock,
) -> Scene:
    return Scene(hooks, receiver, postgres_server.url, db, clock)
