"""`AsyncClient`: the same surface as `Client` for asyncio programs — `await` each call;
batches are sent by background tasks on the caller's event loop."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from bricqs_client import calls
from bricqs_client.base import ClientBase
from bricqs_client.calls import Call
from bricqs_client.client import deliver
from bricqs_client.delivery import BATCH_PATH, Delivery, Item, Options, take_batch

T = TypeVar("T")
P = ParamSpec("P")


def _awaiting(
    build: Callable[P, Call[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """An `AsyncClient` method that makes the call `build` describes; await its answer."""

    @functools.wraps(build)
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._call(build(*args, **kwargs))

    return method


class AsyncClient(ClientBase):
    """The engine's client for asyncio programs; use `async with` or `await close()`.

    If the program exits without closing it, an exit hook sends what is still queued with
    a blocking connection, within `shutdown_timeout`."""

    def __init__(
        self,
        api_key: str,
        *,
        ingest_url: str = "http://127.0.0.1:8000",
        api_url: str = "http://127.0.0.1:8001",
        options: Options | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(api_key, ingest_url, api_url, options)
        self._http = httpx.AsyncClient(
            headers=self._headers, timeout=self.options.timeout, transport=transport
        )
        self._sleep = sleep or asyncio.sleep
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._stopping = False
        self._aborted = False
        self._in_flight = 0
        self._senders: list[asyncio.Task[None]] = []
        atexit.register(self._at_exit)

    # ---- tracking -------------------------------------------------------------------

    async def track(
        self,
        event_name: str,
        participant_id: str,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Queue one event for sending; return its idempotency key. Never waits on the
        network (with `when_full="block"` it waits at most `block_timeout` for room)."""
        event, encoded = self._event(
            event_name, participant_id, properties, timestamp, idempotency_key
        )
        if encoded is None:
            return event.idempotency_key
        item = (event, encoded)
        queue = self._queue
        if len(queue) >= self.options.max_queue_size and not await self._room():
            self._drop(item, "queue_full", "the client's queue was full")
            return item[0].idempotency_key
        queue.append(item)
        if not self._senders:
            self._senders = [
                asyncio.create_task(self._send_loop()) for _ in range(self.options.senders)
            ]
        if len(queue) >= self.options.max_batch_events:
            self._wake.set()
        return item[0].idempotency_key

    # `timeout` parameters keep the surface of `Client`; they bound waits, not requests.
    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Send everything queued now; wait until each event is settled. False if
        `timeout` seconds passed first."""
        self._wake.set()
        return await self._until(lambda: not self._queue and not self._in_flight, timeout)

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Flush, then stop the senders and the connections. Events still unsent after
        `timeout` (default `shutdown_timeout`) are reported with code `shutdown`."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        self._stopping = True
        self._wake.set()
        if self._senders:
            limit = self.options.shutdown_timeout if timeout is None else timeout
            _, late = await asyncio.wait(self._senders, timeout=limit)
            if late:
                self._aborted = True
                await asyncio.wait(late, timeout=1.0)
                for task in late:
                    task.cancel()
        while self._queue:
            self._drop(self._queue.popleft(), "shutdown", "the client closed before sending it")
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _until(self, done: Callable[[], bool], timeout: float | None) -> bool:  # noqa: ASYNC109
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not done():
                    self._changed.clear()
                    await self._changed.wait()
        return done()

    async def _room(self) -> bool:
        if self.options.when_full == "drop":
            return False
        self._wake.set()
        limit = self.options.max_queue_size
        return await self._until(lambda: len(self._queue) < limit, self.options.block_timeout)

    async def _send_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.flush_interval):
                    await self._wake.wait()
            self._wake.clear()
            while batch := take_batch(
                self._queue, self.options.max_batch_events, self.options.max_batch_bytes
            ):
                self._in_flight += len(batch)
                self._changed.set()
                try:
                    await self._deliver(batch)
                finally:
                    self._in_flight -= len(batch)
                    self._changed.set()
            if self._stopping and not self._queue:
                return

    async def _deliver(self, batch: list[Item]) -> None:
        delivery = Delivery(batch, self.options, self._report)
        try:
            await self._send(delivery)
        except asyncio.CancelledError:
            # The loop is going away (asyncio.run cancels leftover tasks): the unsettled
            # events go back for close() or the exit hook; their keys make a resend safe.
            self._queue.extendleft(reversed(delivery.pending))
            raise
        except Exception as exc:  # a sender must survive anything, or the queue stalls
            delivery.crashed(exc)
        self._delivered(delivery.delivered)

    async def _send(self, delivery: Delivery) -> None:
        url = self._urls["ingest"] + BATCH_PATH
        headers = {"Content-Encoding": "gzip"} if delivery.gzip else {}
        while (body := delivery.body()) is not None:
            if self._aborted:
                delivery.give_up("shutdown", "the client closed before it was sent")
                break
            try:
                response = await self._http.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:
                delay = delivery.failed(exc)
            else:
                delay = delivery.answered(
                    response.status_code, response.headers.get("retry-after"), response.content
                )
            if delay is not None:
                await self._sleep(delay)

    def _at_exit(self) -> None:
        """Send what is still queued, blocking: the event loop may be gone by now."""
        deadline = time.monotonic() + self.options.shutdown_timeout
        url = self._urls["ingest"] + BATCH_PATH
        with httpx.Client(headers=self._headers, timeout=self.options.timeout) as http:
            while self._queue:
                batch = take_batch(
                    self._queue, self.options.max_batch_events, self.options.max_batch_bytes
                )
                delivery = Delivery(batch, self.options, self._report)
                deliver(http, url, delivery, time.sleep, lambda: time.monotonic() > deadline)
                self._delivered(delivery.delivered)

    # ---- direct calls -----------------------------------------------------------------

    async def _call(self, call: Call[T]) -> T:
        started = self.options.clock()
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, self._url(call), content=call.body, params=call.params
                )
            except httpx.TransportError as exc:
                delay = self._retry_or_raise(call, attempt, started, None, exc)
            else:
                if response.status_code < 300:
                    return call.decode(response.content)
                delay = self._retry_or_raise(call, attempt, started, response)
            attempt += 1
            await self._sleep(delay)

    track_sync = _awaiting(calls.track_sync)
    participant_state = _awaiting(calls.participant_state)
    points = _awaiting(calls.points)
    badges = _awaiting(calls.badges)
    participant_part = _awaiting(calls.participant_part)
    transactions = _awaiting(calls.transactions)
    facts = _awaiting(calls.facts)
    leaderboard = _awaiting(calls.leaderboard)
    rank = _awaiting(calls.rank)
    award_points = _awaiting(calls.award_points)
    deduct_points = _awaiting(calls.deduct_points)
    award_badge = _awaiting(calls.award_badge)
    create_definition = _awaiting(calls.create_definition)
    list_definitions = _awaiting(calls.list_definitions)
    get_definition = _awaiting(calls.get_definition)
    update_definition = _awaiting(calls.update_definition)
    archive_definition = _awaiting(calls.archive_definition)
