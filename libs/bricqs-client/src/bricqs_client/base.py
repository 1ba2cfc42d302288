"""What `Client` and `AsyncClient` share: the key, the URLs, the queue and its tally,
how `track()` builds an event, and how a direct call's answer is read or retried."""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import msgspec

from bricqs_client.calls import Call
from bricqs_client.delivery import MAX_EVENT_BYTES, Item, Options, Tally, backoff, log, retry_after
from bricqs_client.errors import BricqsError, TransportError, problem_from
from bricqs_client.models import EventFailure, TrackedEvent

T = TypeVar("T")
VERSION = "0.1.0"
_encode = msgspec.json.Encoder().encode


class ClientBase:
    """State and rules common to the sync and async clients."""

    def __init__(
        self, api_key: str, ingest_url: str, api_url: str, options: Options | None
    ) -> None:
        if not api_key:
            raise ValueError("api_key is required (a bq_live_… or bq_test_… key)")
        self._api_key = api_key
        self._urls = {"ingest": ingest_url.rstrip("/"), "api": api_url.rstrip("/")}
        self.options = options or Options()
        # Keys are this random prefix plus a counter: unique across processes, and
        # cheaper on the caller's thread than a uuid per event.
        self._prefix = f"c-{secrets.token_hex(12)}-"
        self._keys = itertools.count(1)
        self._queue: deque[Item] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self.tally = Tally()
        """Counts of delivered, failed and dropped events (read, don't write)."""
        if self.options.debug and log.level in (logging.NOTSET, logging.WARNING):
            log.setLevel(logging.DEBUG)

    def __repr__(self) -> str:
        # The key never appears in a repr, a log line or an exception.
        urls = self._urls
        return f"{type(self).__name__}(ingest_url={urls['ingest']!r}, api_url={urls['api']!r})"

    @property
    def _headers(self) -> dict[str, str]:
        """Headers of every request (private: they hold the key)."""
        return {
            "X-API-Key": self._api_key,
            "User-Agent": f"bricqs-client-python/{VERSION}",
            "Content-Type": "application/json",
        }

    def new_key(self) -> str:
        """A fresh idempotency key."""
        return f"{self._prefix}{next(self._keys)}"

    def _event(
        self,
        event_name: str,
        participant_id: str,
        properties: Mapping[str, Any] | None,
        timestamp: datetime | str | None,
        idempotency_key: str | None,
    ) -> tuple[TrackedEvent, bytes | None]:
        """The event and its JSON, or None for the JSON of an event refused as too large."""
        if self._closed:
            raise BricqsError("track() after close()")
        event = TrackedEvent(
            event_name=event_name,
            participant_id=participant_id,
            idempotency_key=idempotency_key or f"{self._prefix}{next(self._keys)}",
            # The time of the call, not of the batch's arrival, is when it happened.
            timestamp=timestamp or datetime.now(UTC),
            properties=dict(properties) if properties is not None else None,
        )
        encoded = _encode(event)
        if len(encoded) > MAX_EVENT_BYTES:
            self._report(
                EventFailure(
                    event=event,
                    code="event_too_large",
                    detail=f"the encoded event is {len(encoded)} bytes; the limit is 32 KiB",
                )
            )
            return event, None
        return event, encoded

    def _report(self, failure: EventFailure) -> None:
        with self._lock:
            if failure.code == "queue_full":
                self.tally.dropped += 1
            else:
                self.tally.failed += 1
        log.debug("event %s failed: %s", failure.event.idempotency_key, failure.code)
        if self.options.on_error is not None:
            try:
                self.options.on_error(failure)
            except Exception:
                log.exception("on_error raised; the failure is counted in tally.failed")

    def _drop(self, item: Item, code: str, detail: str) -> None:
        self._report(EventFailure(event=item[0], code=code, detail=detail))

    def _delivered(self, count: int) -> None:
        with self._lock:
            self.tally.delivered += count

    def _url(self, call: Call[Any]) -> str:
        return self._urls[call.service] + call.path

    def _retry_or_raise(
        self,
        call: Call[Any],
        attempt: int,
        started: float,
        response: httpx.Response | None,
        error: Exception | None = None,
    ) -> float:
        """The delay before retrying a direct call, or the exception that ends it."""
        status = response.status_code if response is not None else None
        transient = status is None or status in (429, 503) or status >= 500
        if call.retry and transient:
            wait = (
                retry_after(response.headers.get("retry-after")) if response is not None else None
            )
            delay = backoff(self.options, attempt + 1) if wait is None else wait
            spent = self.options.clock() - started
            if (
                attempt + 1 < self.options.max_attempts
                and spent + delay <= self.options.max_retry_seconds
            ):
                log.debug("%s %s: retry in %.3f s", call.method, call.path, delay)
                return delay
        if response is None:
            raise TransportError(f"{call.method} {call.path}: {type(error).__name__}") from error
        raise problem_from(response.status_code, response.content)
