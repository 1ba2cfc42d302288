"""The parts of tracking that do no I/O, shared by `Client` and `AsyncClient`: settings,
the queue's batches, and the retry policy of one batch (which answers settle an event,
which are retried and after how long, which are reported to `on_error`)."""

from __future__ import annotations

import email.utils
import gzip
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

from bricqs_client.models import EventFailure, FieldError, TrackedEvent

log = logging.getLogger("bricqs_client")

BATCH_PATH = "/api/v1/ingest/events/batch"
MAX_BATCH_EVENTS = 100
MAX_BATCH_BYTES = 1024 * 1024
"""The ingest's limit on a batch request body (SPEC §3), decompressed."""
MAX_EVENT_BYTES = 32 * 1024
"""The ingest's limit on one encoded event."""
_ENVELOPE = len(b'{"events":[]}')


@dataclass(frozen=True, kw_only=True)
class Options:
    """How the client batches, retries and shuts down; the defaults suit most apps."""

    max_batch_events: int = MAX_BATCH_EVENTS
    """Events per batch request (the server takes at most 100)."""
    max_batch_bytes: int = MAX_BATCH_BYTES
    """Bytes per batch request body before gzip (the server takes at most 1 MiB)."""
    flush_interval: float = 0.5
    """Seconds an event may wait in the queue for its batch to fill."""
    max_queue_size: int = 10_000
    """Events held in memory at most; what happens beyond is `when_full`."""
    when_full: Literal["drop", "block"] = "drop"
    """A full queue drops the new event (counted, reported) or blocks `track()`."""
    block_timeout: float = 1.0
    """With `when_full="block"`: seconds `track()` waits for room before dropping."""
    max_attempts: int = 10
    """Requests per batch at most before its events are reported as failed."""
    max_retry_seconds: float = 60.0
    """Seconds a batch may spend retrying, counted from its first request."""
    backoff_initial: float = 0.5
    """First backoff delay in seconds; it doubles per attempt, with jitter."""
    backoff_max: float = 30.0
    """Cap on one backoff delay in seconds."""
    gzip: bool = False
    """Compress batch bodies (worth it on slow links; costs CPU on both sides)."""
    timeout: float = 10.0
    """Seconds per HTTP request (connect, read, write)."""
    shutdown_timeout: float = 10.0
    """Seconds `close()` (and the exit hook) may take to send what is queued."""
    senders: int = 1
    """Batches in flight at once (one background sender each)."""
    on_error: Callable[[EventFailure], None] | None = None
    """Called once per event the client gives up on (from a background sender)."""
    clock: Callable[[], float] = time.monotonic
    """Seconds, for the retry time budget; tests pass a fake one with their `sleep`."""
    debug: bool = False
    """Log each request and its outcome at DEBUG on the `bricqs_client` logger."""

    def __post_init__(self) -> None:
        # Past the server's limits every batch would be refused whole: say so at once.
        bounds = {
            "max_batch_events": (1, MAX_BATCH_EVENTS),
            "max_batch_bytes": (MAX_EVENT_BYTES + _ENVELOPE, MAX_BATCH_BYTES),
            "max_queue_size": (1, None),
            "max_attempts": (1, None),
            "senders": (1, None),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if value < low or (high is not None and value > high):
                raise ValueError(f"Options.{name} must be in [{low}, {high or '∞'}], not {value}")


@dataclass
class Tally:
    """What happened to the events handed to `track()` so far."""

    delivered: int = 0
    """Accepted by the server (or recognised as a duplicate of an accepted one)."""
    failed: int = 0
    """Reported to `on_error`: rejected, retries exhausted, or closed before sending."""
    dropped: int = 0
    """Refused by a full queue (also reported to `on_error`, code `queue_full`)."""


Item = tuple[TrackedEvent, bytes]


def take_batch(queue: deque[Item], max_events: int, max_bytes: int) -> list[Item]:
    """Pop the oldest events that fit one batch request (at least one when any is queued)."""
    batch: list[Item] = []
    size = _ENVELOPE
    while queue and len(batch) < max_events:
        item = queue[0]
        grown = size + len(item[1]) + 1
        if batch and grown > max_bytes:
            break
        batch.append(queue.popleft())
        size = grown
    return batch


def backoff(options: Options, attempt: int) -> float:
    """Capped exponential backoff with jitter (half to full), for retry `attempt` (1-based)."""
    ceiling = min(options.backoff_max, options.backoff_initial * 2 ** (attempt - 1))
    return float(ceiling * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not a secret


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class _Error(msgspec.Struct, kw_only=True):
    code: str = ""
    detail: str = ""
    errors: list[FieldError] | None = None


class _Result(msgspec.Struct, kw_only=True):
    index: int
    status: str
    error: _Error | None = None


class _BatchAnswer(msgspec.Struct, kw_only=True):
    results: list[_Result]


class _Counts(msgspec.Struct, kw_only=True):
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0


_decode_answer = msgspec.json.Decoder(_BatchAnswer).decode
_decode_counts = msgspec.json.Decoder(_Counts).decode
_decode_error = msgspec.json.Decoder(_Error).decode
_TRANSIENT_EVENT_CODES = frozenset({"rate_limited"})
"""Per-event rejections of a 202 that a later request may get accepted."""


class Delivery:
    """One batch on its way: the request body to send next, and what each answer means.

    The caller loops: `body()`; send it; `answered(...)` or `failed(...)`, which return
    the seconds to wait before the next `body()`, or None when every event is settled."""

    def __init__(
        self, items: list[Item], options: Options, report: Callable[[EventFailure], None]
    ) -> None:
        self.pending = items
        self.delivered = 0
        self._options = options
        self._report = report
        self.gzip = options.gzip
        self._attempt = 0
        self._started = options.clock()

    def body(self) -> bytes | None:
        """The batch request body for the events not settled yet; None when all are."""
        if not self.pending:
            return None
        raw = b'{"events":[' + b",".join(encoded for _, encoded in self.pending) + b"]}"
        return gzip.compress(raw, compresslevel=5) if self._options.gzip else raw

    def answered(self, status: int, retry_after_header: str | None, content: bytes) -> float | None:
        """Settle the events an HTTP answer decided; the delay before retrying the rest."""
        log.debug("batch of %d events: HTTP %d", len(self.pending), status)
        if status == 202 and self._all_taken(content):
            self.delivered += len(self.pending)
            self.pending = []
            return None
        if status in (202, 422):
            try:
                results = _decode_answer(content).results
            except (msgspec.DecodeError, msgspec.ValidationError):
                results = None
            if results is not None and len(results) == len(self.pending):
                return self._per_event(status, results, retry_after(retry_after_header))
        if status in (429, 503):
            return self._retry(status, "server busy", retry_after(retry_after_header))
        if status >= 500 or status == 408:
            return self._retry(status, f"server error {status}", None)
        error = _problem(content)
        # A 2xx without readable per-event results leaves each event's fate unknown.
        code = error.code or ("unreadable_answer" if status < 300 else f"http_{status}")
        self.give_up(code, error.detail, status, error.errors)
        return None

    def failed(self, error: Exception) -> float | None:
        """The request did not get an answer (connection refused or cut, timeout)."""
        log.debug("batch of %d events: %s", len(self.pending), type(error).__name__)
        return self._retry(None, f"network error: {type(error).__name__}", None)

    def _all_taken(self, content: bytes) -> bool:
        # The common answer; its counts say so without building a result per event.
        try:
            counts = _decode_counts(content)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        return counts.rejected == 0 and counts.accepted + counts.duplicates == len(self.pending)

    def crashed(self, error: Exception) -> None:
        """Something unforeseen broke the sending: report the unsettled events."""
        log.error("sending a batch failed", exc_info=error)
        self.give_up("client_error", f"{type(error).__name__}: {error}")

    def give_up(
        self,
        code: str,
        detail: str,
        status: int | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        """Report every unsettled event as failed."""
        for event, _ in self.pending:
            self._report(
                EventFailure(
                    event=event, code=code, detail=detail, status=status, errors=tuple(errors or ())
                )
            )
        self.pending = []

    def _per_event(self, status: int, results: list[_Result], wait: float | None) -> float | None:
        retry: list[Item] = []
        for result, item in zip(results, self.pending, strict=True):
            if result.status in ("accepted", "duplicate"):
                self.delivered += 1
            elif result.error is not None and result.error.code in _TRANSIENT_EVENT_CODES:
                retry.append(item)
            else:
                error = result.error or _Error(code="rejected")
                self._report(
                    EventFailure(
                        event=item[0],
                        code=error.code,
                        detail=error.detail,
                        status=status,
                        errors=tuple(error.errors or ()),
                    )
                )
        self.pending = retry
        return self._retry(status, "rate limited", wait) if retry else None

    def _retry(self, status: int | None, why: str, wait: float | None) -> float | None:
        self._attempt += 1
        delay = backoff(self._options, self._attempt) if wait is None else wait
        spent = self._options.clock() - self._started
        if (
            self._attempt >= self._options.max_attempts
            or spent + delay > self._options.max_retry_seconds
        ):
            self.give_up(
                "retries_exhausted", f"gave up after {self._attempt} attempts: {why}", status
            )
            return None
        log.debug("batch of %d events: retry in %.3f s (%s)", len(self.pending), delay, why)
        return delay


def _problem(content: bytes) -> _Error:
    try:
        return _decode_error(content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _Error(detail=content[:200].decode(errors="replace"))
