"""`Client`: track events from any thread (sent by background sender threads), and make
direct calls (reads, actions, definitions, `track_sync`) that block until answered."""

from __future__ import annotations

import atexit
import functools
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from bricqs_client import calls
from bricqs_client.base import ClientBase
from bricqs_client.calls import Call
from bricqs_client.delivery import BATCH_PATH, Delivery, Item, Options, take_batch

T = TypeVar("T")
P = ParamSpec("P")


def _answering(build: Callable[P, Call[T]]) -> Callable[Concatenate[Client, P], T]:
    """A `Client` method that makes the call `build` describes and returns its answer."""

    @functools.wraps(build)
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(build(*args, **kwargs))

    return method


class Client(ClientBase):
    """The engine's client for threaded (or plain synchronous) programs.

    `track()` only queues; `flush()` waits until the queue is sent; `close()` (or leaving
    a `with` block, or the interpreter exiting) flushes within `shutdown_timeout`."""

    def __init__(
        self,
        api_key: str,
        *,
        ingest_url: str = "http://127.0.0.1:8000",
        api_url: str = "http://127.0.0.1:8001",
        options: Options | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(api_key, ingest_url, api_url, options)
        self._http = httpx.Client(
            headers=self._headers, timeout=self.options.timeout, transport=transport
        )
        self._sleep = sleep
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._changed = threading.Condition(self._lock)
        self._in_flight = 0
        self._senders: list[threading.Thread] = []
        atexit.register(self.close)

    # ---- tracking -------------------------------------------------------------------

    def track(
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
        if len(queue) >= self.options.max_queue_size and not self._room():
            self._drop(item, "queue_full", "the client's queue was full")
            return item[0].idempotency_key
        queue.append(item)
        if not self._senders:
            self._start()
        if len(queue) >= self.options.max_batch_events:
            self._wake.set()
        return item[0].idempotency_key

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now; wait until each event is settled (delivered or
        reported). False if `timeout` seconds passed first."""
        self._wake.set()
        with self._changed:
            return self._changed.wait_for(lambda: not self._queue and not self._in_flight, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the senders and the connections. Events still unsent after
        `timeout` (default `shutdown_timeout`) are reported with code `shutdown`."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        deadline = time.monotonic() + (
            self.options.shutdown_timeout if timeout is None else timeout
        )
        self._stopping.set()
        self._wake.set()
        for sender in self._senders:
            sender.join(max(0.0, deadline - time.monotonic()))
        if any(sender.is_alive() for sender in self._senders):
            self._abort.set()
            for sender in self._senders:
                sender.join(max(0.0, min(1.0, deadline + 1.0 - time.monotonic())))
        while self._queue:
            self._drop(self._queue.popleft(), "shutdown", "the client closed before sending it")
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _room(self) -> bool:
        if self.options.when_full == "drop":
            return False
        self._wake.set()
        with self._changed:
            return self._changed.wait_for(
                lambda: len(self._queue) < self.options.max_queue_size, self.options.block_timeout
            )

    def _start(self) -> None:
        with self._lock:
            if self._senders:
                return
            for n in range(self.options.senders):
                sender = threading.Thread(
                    target=self._send_loop, name=f"bricqs-sender-{n}", daemon=True
                )
                self._senders.append(sender)
                sender.start()

    def _send_loop(self) -> None:
        while True:
            self._wake.wait(self.options.flush_interval)
            self._wake.clear()
            while batch := self._take():
                try:
                    self._deliver(batch)
                finally:
                    with self._changed:
                        self._in_flight -= len(batch)
                        self._changed.notify_all()
            if self._stopping.is_set() and not self._queue:
                return

    def _take(self) -> list[Item]:
        with self._changed:
            batch = take_batch(
                self._queue, self.options.max_batch_events, self.options.max_batch_bytes
            )
            self._in_flight += len(batch)
            self._changed.notify_all()
            return batch

    def _deliver(self, batch: list[Item]) -> None:
        url = self._urls["ingest"] + BATCH_PATH
        delivery = Delivery(batch, self.options, self._report)
        try:
            deliver(self._http, url, delivery, self._pause, self._abort.is_set)
        except Exception as exc:  # a sender must survive anything, or the queue stalls
            delivery.crashed(exc)
        self._delivered(delivery.delivered)

    def _pause(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self._abort.wait(seconds)  # close() cuts a wait short

    # ---- direct calls -----------------------------------------------------------------

    def _call(self, call: Call[T]) -> T:
        started = self.options.clock()
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method, self._url(call), content=call.body, params=call.params
                )
            except httpx.TransportError as exc:
                delay = self._retry_or_raise(call, attempt, started, None, exc)
            else:
                if response.status_code < 300:
                    return call.decode(response.content)
                delay = self._retry_or_raise(call, attempt, started, response)
            attempt += 1
            (self._sleep or time.sleep)(delay)

    track_sync = _answering(calls.track_sync)
    participant_state = _answering(calls.participant_state)
    points = _answering(calls.points)
    badges = _answering(calls.badges)
    participant_part = _answering(calls.participant_part)
    transactions = _answering(calls.transactions)
    facts = _answering(calls.facts)
    leaderboard = _answering(calls.leaderboard)
    rank = _answering(calls.rank)
    award_points = _answering(calls.award_points)
    deduct_points = _answering(calls.deduct_points)
    award_badge = _answering(calls.award_badge)
    create_definition = _answering(calls.create_definition)
    list_definitions = _answering(calls.list_definitions)
    get_definition = _answering(calls.get_definition)
    update_definition = _answering(calls.update_definition)
    archive_definition = _answering(calls.archive_definition)


def deliver(
    http: httpx.Client,
    url: str,
    delivery: Delivery,
    pause: Callable[[float], None],
    aborted: Callable[[], bool],
) -> None:
    """Send one batch until every event in it is settled (or `aborted()` turns true)."""
    headers = {"Content-Encoding": "gzip"} if delivery.gzip else {}
    while (body := delivery.body()) is not None:
        if aborted():
            delivery.give_up("shutdown", "the client closed before it was sent")
            break
        try:
            response = http.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            delay = delivery.failed(exc)
        else:
            delay = delivery.answered(
                response.status_code, response.headers.get("retry-after"), response.content
            )
        if delay is not None:
            pause(delay)
