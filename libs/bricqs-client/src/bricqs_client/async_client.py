"""`AsyncClient`: the same surface as `Client` for asyncio programs — `await` each call;
batches are sent by background tasks on the caller's event loop."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Literal, TypeVar

import httpx

from bricqs_client import calls
from bricqs_client.base import ClientBase
from bricqs_client.calls import Call
from bricqs_client.client import deliver
from bricqs_client.delivery import BATCH_PATH, Delivery, Item, Options, take_batch
from bricqs_client.models import (
    BadgeAward,
    BadgeState,
    Definition,
    DefinitionKind,
    Leaderboard,
    Page,
    ParticipantState,
    Period,
    PointsBalance,
    PointsChange,
    Rank,
    SyncResult,
)

T = TypeVar("T")


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
            headers=self.headers, timeout=self.options.timeout, transport=transport
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
        item = self._event(event_name, participant_id, properties, timestamp, idempotency_key)
        if item is None:
            return idempotency_key or ""
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
        self._delivered(delivery.delivered)

    def _at_exit(self) -> None:
        """Send what is still queued, blocking: the event loop may be gone by now."""
        deadline = time.monotonic() + self.options.shutdown_timeout
        url = self._urls["ingest"] + BATCH_PATH
        with httpx.Client(headers=self.headers, timeout=self.options.timeout) as http:
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

    async def track_sync(
        self,
        event_name: str,
        participant_id: str,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        idempotency_key: str | None = None,
    ) -> SyncResult:
        """Process one event now; the answer carries its fact and mechanics effects."""
        key = idempotency_key or self.new_key()
        body = calls.event_body(event_name, participant_id, properties, timestamp, key)
        return await self._call(calls.track_sync(body))

    async def participant_state(self, participant_id: str) -> ParticipantState:
        """Points, badges, challenges, streaks and tiers in one read."""
        return await self._call(calls.participant_state(participant_id))

    async def points(self, participant_id: str) -> PointsBalance:
        """Balance and lifetime totals."""
        return await self._call(calls.participant_points(participant_id))

    async def badges(self, participant_id: str) -> BadgeState:
        """Earned badges and progress towards the others."""
        return await self._call(calls.participant_badges(participant_id))

    async def participant_part(
        self, participant_id: str, part: Literal["challenges", "streaks", "tier"]
    ) -> list[dict[str, Any]]:
        """Challenge progress, streaks or tier levels of a participant."""
        return await self._call(calls.participant_part(participant_id, part))

    async def transactions(
        self, participant_id: str, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """The points ledger, newest first."""
        call = calls.participant_page(participant_id, "points/transactions", cursor, limit)
        return await self._call(call)

    async def facts(
        self,
        participant_id: str,
        cursor: str | None = None,
        limit: int = 50,
        fact_type: str | None = None,
    ) -> Page:
        """The participant's facts, newest first."""
        call = calls.participant_page(participant_id, "facts", cursor, limit, fact_type)
        return await self._call(call)

    async def leaderboard(
        self, code: str, period: Period | None = None, limit: int = 10
    ) -> Leaderboard:
        """The top of a leaderboard."""
        return await self._call(calls.leaderboard(code, period, limit))

    async def rank(self, code: str, participant_id: str, period: Period | None = None) -> Rank:
        """One participant's rank (NotFoundError `not_ranked` when unscored)."""
        return await self._call(calls.rank(code, participant_id, period))

    async def award_points(
        self, participant_id: str, amount: int, reason: str = "", idempotency_key: str | None = None
    ) -> PointsChange:
        """Award points by hand (retried safely under an idempotency key)."""
        key = idempotency_key or self.new_key()
        return await self._call(calls.change_points("award", participant_id, amount, reason, key))

    async def deduct_points(
        self, participant_id: str, amount: int, reason: str = "", idempotency_key: str | None = None
    ) -> PointsChange:
        """Deduct points (ConflictError `insufficient_balance` past the balance)."""
        key = idempotency_key or self.new_key()
        return await self._call(calls.change_points("deduct", participant_id, amount, reason, key))

    async def award_badge(self, participant_id: str, badge_code: str) -> BadgeAward:
        """Award a badge by hand."""
        return await self._call(calls.award_badge(participant_id, badge_code))

    async def create_definition(self, kind: DefinitionKind, body: Mapping[str, Any]) -> Definition:
        """Create a points rule, badge, challenge, streak, leaderboard or tier."""
        return await self._call(calls.create_definition(kind, body))

    async def list_definitions(
        self, kind: DefinitionKind, include_archived: bool = False
    ) -> list[Definition]:
        """Every definition of a kind."""
        return await self._call(calls.list_definitions(kind, include_archived))

    async def get_definition(self, kind: DefinitionKind, code: str) -> Definition:
        """One definition by code."""
        return await self._call(calls.get_definition(kind, code))

    async def update_definition(
        self, kind: DefinitionKind, code: str, body: Mapping[str, Any]
    ) -> Definition:
        """Replace a definition (its version goes up)."""
        return await self._call(calls.update_definition(kind, code, body))

    async def archive_definition(self, kind: DefinitionKind, code: str) -> Definition:
        """Archive a definition: it stops applying; its history stays."""
        return await self._call(calls.archive_definition(kind, code))
