"""The client against the real services: ingest and api under Granian and a processor,
started once for the package (each test has a project of its own), and one driver per
client flavour so every tracking test runs on `Client` and `AsyncClient`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from bricqs_client import AsyncClient, Client, EventFailure, Options, Tally
from bricqs_devstack.servers import Server
from tests.conftest import Tenant, make_tenant
from tests.ingest.helpers import granian_app, granian_ingest
from tests.processes import ProcessorFactory, wait_until

T = TypeVar("T")


@pytest.fixture(scope="package")
def ingest_url(redis_server: Server, postgres_server: Server) -> Iterator[str]:
    with granian_ingest(redis_server.url, postgres_server.url, RULES_REFRESH_SECONDS="0") as base:
        yield base


@pytest.fixture(scope="package")
def api_url(redis_server: Server, postgres_server: Server) -> Iterator[str]:
    with granian_app(
        "bricqs_api.app:create_app",
        redis_server.url,
        postgres_server.url,
        RULES_REFRESH_SECONDS="0",
    ) as base:
        yield base


@pytest.fixture(scope="package")
def processor(
    redis_server: Server, postgres_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessorFactory]:
    factory = ProcessorFactory(
        redis_server.url, postgres_server.url, Path(tmp_path_factory.mktemp("client-processor"))
    )
    factory.start()
    yield factory
    factory.stop_all()


def custom_facts(database_url: str, project_id: str) -> dict[str, int]:
    """Facts of a project per idempotency key of their event (1 each when exactly once)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT e.idempotency_key, count(*) FROM facts f"
            " JOIN events e ON e.event_id = f.event_id AND e.project_id = f.project_id"
            " WHERE f.project_id = %s AND f.fact_type LIKE 'custom.%%' GROUP BY 1",
            (project_id,),
        ).fetchall()
    return {key: count for key, count in rows}


def wait_for_facts(
    database_url: str, tenant: Tenant, count: int, logs: Callable[[], str]
) -> dict[str, int]:
    """The facts of the tenant once `count` of them are stored."""
    return wait_until(
        lambda: (
            (facts := custom_facts(database_url, tenant.project_id))
            and sum(facts.values()) >= count
            and facts
        ),
        60,
        f"{count} facts",
        logs,
    )


@dataclass(frozen=True)
class Project:
    """A fresh project whose events a processor turns into facts, and the ingest's URL."""

    tenant: Tenant
    ingest_url: str
    database_url: str
    processor: ProcessorFactory

    def facts_once(self, count: int) -> dict[str, int]:
        """Facts per idempotency key, once `count` facts are stored."""
        return wait_for_facts(self.database_url, self.tenant, count, self.processor.logs)


@pytest.fixture
def project(
    ingest_url: str, processor: ProcessorFactory, postgres_server: Server, client_tenant: Tenant
) -> Project:
    return Project(client_tenant, ingest_url, postgres_server.url, processor)


class Failures:
    """An `on_error` that keeps what it is given."""

    def __init__(self) -> None:
        self.items: list[EventFailure] = []
        self._lock = threading.Lock()

    def __call__(self, failure: EventFailure) -> None:
        with self._lock:
            self.items.append(failure)


class Driver:
    """Runs `Client` or `AsyncClient` (on a loop in its own thread) behind one sync API."""

    def __init__(self, flavour: str, api_key: str, ingest_url: str, options: Options, **kw: Any):
        self.flavour = flavour
        self._loop: asyncio.AbstractEventLoop | None = None
        if flavour == "sync":
            self.client: Client | AsyncClient = Client(
                api_key, ingest_url=ingest_url, options=options, **kw
            )
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def make() -> AsyncClient:
            return AsyncClient(api_key, ingest_url=ingest_url, options=options, **kw)

        self.client = self._run(make())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(120)

    @property
    def tally(self) -> Tally:
        return self.client.tally

    def track_all(self, events: list[dict[str, Any]], workers: int = 1) -> list[str]:
        """Track `events` from `workers` threads (sync) or tasks (async); their keys."""
        shares = [events[i::workers] for i in range(workers)]
        keys: list[list[str]] = [[] for _ in shares]
        client = self.client
        if isinstance(client, Client):
            threads = [
                threading.Thread(target=lambda s=s, k=k: k.extend(client.track(**e) for e in s))
                for s, k in zip(shares, keys, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            async_client = client

            async def share(s: list[dict[str, Any]], k: list[str]) -> None:
                for e in s:
                    k.append(await async_client.track(**e))

            async def all_shares() -> None:
                await asyncio.gather(*(share(s, k) for s, k in zip(shares, keys, strict=True)))

            self._run(all_shares())
        return [key for share_keys in keys for key in share_keys]

    def flush(self, timeout: float | None = None) -> bool:
        if isinstance(self.client, Client):
            return self.client.flush(timeout)
        return self._run(self.client.flush(timeout))

    def close(self) -> None:
        if isinstance(self.client, Client):
            self.client.close()
            return
        self._run(self.client.close())
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client_tenant(postgres_server: Server) -> Tenant:
    return make_tenant(postgres_server.url, "client tests")


class Recorder:
    """What a transport saw: (clock reading, status or None for a network error,
    Retry-After) per request, in order."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.seen: list[tuple[float, int | None, str | None]] = []

    def note(self, response: httpx.Response | None) -> None:
        if response is None:
            self.seen.append((self.clock(), None, None))
        else:
            self.seen.append(
                (self.clock(), response.status_code, response.headers.get("retry-after"))
            )


class RecordingTransport(httpx.HTTPTransport):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            self.recorder.note(None)
            raise
        self.recorder.note(response)
        return response


class AsyncRecordingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError:
            self.recorder.note(None)
            raise
        self.recorder.note(response)
        return response


def recording(flavour: str, recorder: Recorder) -> httpx.BaseTransport | httpx.AsyncBaseTransport:
    """A real transport for the flavour that records into `recorder`."""
    return RecordingTransport(recorder) if flavour == "sync" else AsyncRecordingTransport(recorder)
