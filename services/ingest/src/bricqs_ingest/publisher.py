"""Enqueueing envelopes on the event streams, coalescing concurrent requests.

Every request hands its commands to one `StreamPublisher` per process. Commands that
arrive while the event loop is busy are sent together as one Redis pipeline: one
round trip for a whole batch request, and for many concurrent single-event requests
under load. At most `max_inflight` pipelines are in flight; later commands wait and go
out together in the next one, which is what keeps the round trips per request falling
as load rises.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Histogram
from redis.exceptions import NoScriptError, RedisError, ResponseError

from bricqs.redis_connect import RedisClient
from bricqs.schemas import ENVELOPE_FIELD
from bricqs.stream import ENQUEUE_SCRIPT, TAKE_TOKENS_SCRIPT, XADD_ALL_SCRIPT
from bricqs.web.metrics import LATENCY_BUCKETS

XADD_LATENCY = Histogram(
    "bricqs_ingest_xadd_duration_seconds",
    "Latency of one Redis pipeline of enqueue commands (XADD or the idempotent script).",
    buckets=LATENCY_BUCKETS,
)
PIPELINE_SIZE = Histogram(
    "bricqs_ingest_pipeline_commands",
    "Enqueue commands sent per Redis pipeline.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)


def _digest(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 -- Redis names scripts so


# The scripts go by digest (EVALSHA): sending the enqueue script's source with every keyed
# event would cost more bytes than the event. Redis forgets them on a restart or SCRIPT
# FLUSH; the calls it then refuses (NOSCRIPT) did nothing and are sent again after a load.
SCRIPTS = {
    _digest(script): script for script in (ENQUEUE_SCRIPT, TAKE_TOKENS_SCRIPT, XADD_ALL_SCRIPT)
}
ENQUEUE_SHA = _digest(ENQUEUE_SCRIPT)
TAKE_TOKENS_SHA = _digest(TAKE_TOKENS_SCRIPT)
XADD_ALL_SHA = _digest(XADD_ALL_SCRIPT)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket refilled at `per_second`, holding `burst`."""

    bucket: str
    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class EnqueueCommand:
    """Put one envelope on a stream; with an idempotency key, only if the key is free
    (checked, and then held, atomically with the XADD)."""

    stream: str
    envelope: bytes
    event_id: str
    idempotency_key: str | None = None
    payload_hash: str = ""


@dataclass(frozen=True, slots=True)
class TakeTokens:
    """Take `cost` tokens from a bucket, or give them back with a negative cost."""

    limit: RateLimit
    cost: int


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The envelope is on the stream as `message_id`."""

    message_id: str


@dataclass(frozen=True, slots=True)
class AlreadyHeld:
    """The idempotency key was used before, by the event `event_id`."""

    payload_hash: str
    message_id: str | None
    """None when the original went through the sync endpoint: it was never on a stream."""
    event_id: str


@dataclass(frozen=True, slots=True)
class Taken:
    """The tokens were taken (or given back)."""

    remaining: int


@dataclass(frozen=True, slots=True)
class RateLimited:
    """Not enough tokens: none were taken."""

    retry_after_ms: int
    remaining: int


class QueueUnavailable(Exception):
    """Redis did not take the commands in time, or refused them (down, full)."""


Command = EnqueueCommand | TakeTokens
EnqueueResult = Enqueued | AlreadyHeld | Taken | RateLimited


class StreamPublisher:
    """Sends enqueue commands to Redis in coalesced pipelines."""

    def __init__(
        self, redis: RedisClient, *, timeout: float, idempotency_ttl: int, max_inflight: int
    ) -> None:
        self._redis = redis
        self._timeout = timeout
        self._ttl = idempotency_ttl
        # One future per `enqueue` call, resolved with the replies to all its commands.
        self._waiting: list[tuple[Sequence[Command], asyncio.Future[list[EnqueueResult]]]] = []
        self._slots = asyncio.Semaphore(max_inflight)
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def enqueue(self, commands: Sequence[Command]) -> list[EnqueueResult]:
        """Run `commands`; raise QueueUnavailable unless Redis answered all in time.

        The bound is the flush's: each flush (waiting for a pipeline slot, then the round
        trip) is given `timeout` from the moment it was scheduled, which is no later than
        this call, and fails its callers when it runs out. So no per-call timer is needed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[EnqueueResult]] = loop.create_future()
        self._waiting.append((commands, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            task = loop.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _flush(self) -> None:
        batch: list[tuple[Sequence[Command], asyncio.Future[list[EnqueueResult]]]] = []
        try:
            async with asyncio.timeout(self._timeout), self._slots:
                # Take everything that queued up while we waited for a slot: one pipeline.
                batch, self._waiting = self._waiting, []
                self._flush_scheduled = False
                if not batch:
                    return
                replies = await self._send([c for commands, _ in batch for c in commands])
        except BaseException as exc:
            if not batch:  # timed out waiting for a slot: fail what this flush would send
                batch, self._waiting = self._waiting, []
                self._flush_scheduled = False
            if isinstance(exc, TimeoutError):
                failure = QueueUnavailable("Redis did not answer in time")
            elif isinstance(exc, RedisError | OSError):
                failure = QueueUnavailable(f"Redis unavailable: {type(exc).__name__}")
            else:
                failure = QueueUnavailable(f"enqueue failed: {type(exc).__name__}: {exc}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise  # cancellation at shutdown: the callers were told above
            return
        start = 0
        for commands, future in batch:
            end = start + len(commands)
            mine = replies[start:end]
            start = end
            if future.done():  # the request went away meanwhile
                continue
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None:
                future.set_exception(QueueUnavailable(str(error)))
            else:
                future.set_result(mine)  # type: ignore[arg-type]

    async def _send(self, commands: list[Command]) -> list[EnqueueResult | Exception]:
        started = time.perf_counter()
        calls: list[tuple[Any, ...]] = []
        # How many commands each pipeline entry answers: consecutive plain XADDs to one
        # stream go as one script call (redis-py parses, and arms a read timer for, every
        # reply; a batch of 100 plain events is then one reply, not 100).
        spans: list[int] = []
        run: list[bytes] = []
        run_stream = ""

        def close_run() -> None:
            if len(run) == 1:
                calls.append(("XADD", run_stream, "*", ENVELOPE_FIELD, run[0]))
            elif run:
                calls.append(("EVALSHA", XADD_ALL_SHA, 1, run_stream, *run))
            if run:
                spans.append(len(run))
                run.clear()

        for command in commands:
            if isinstance(command, EnqueueCommand) and command.idempotency_key is None:
                if run and command.stream != run_stream:
                    close_run()
                run_stream = command.stream
                run.append(command.envelope)
                continue
            close_run()
            spans.append(1)
            if isinstance(command, TakeTokens):
                limit = command.limit
                bucket = (TAKE_TOKENS_SHA, 1, limit.bucket)
                calls.append(("EVALSHA", *bucket, limit.per_second, limit.burst, command.cost))
            else:
                keys = (ENQUEUE_SHA, 2, command.stream, command.idempotency_key)
                args = (command.envelope, command.payload_hash, command.event_id, self._ttl)
                calls.append(("EVALSHA", *keys, *args))
        close_run()
        replies = await self._execute(calls)
        XADD_LATENCY.observe(time.perf_counter() - started)
        PIPELINE_SIZE.observe(len(commands))
        results: list[EnqueueResult | Exception] = []
        for span, reply, command in zip(spans, replies, _firsts(spans, commands), strict=True):
            if span == 1:
                results.append(_parse_reply(command, reply))
            elif isinstance(reply, Exception):
                results.extend([reply] * span)
            else:
                results.extend(Enqueued(message_id.decode()) for message_id in reply)
        if len(results) != len(commands):
            raise RedisError(f"{len(results)} replies to {len(commands)} enqueue commands")
        return results

    async def _execute(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Send `calls` as one pipeline; calls refused NOSCRIPT go again, after the scripts
        are loaded, in a second pipeline (a few more round trips, only after Redis forgot)."""
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*call)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # Loaded outside the pipeline: a cluster client sends SCRIPT LOAD to every
            # primary (a replica promoted by a failover never had them).
            for script in SCRIPTS.values():
                await self._redis.script_load(script)
            again = self._redis.pipeline(transaction=False)
            for i in missing:
                again.execute_command(*calls[i])
            retried = await again.execute(raise_on_error=False)
            for i, reply in zip(missing, retried, strict=True):
                replies[i] = reply
        return replies

    async def close(self) -> None:
        """Wait for pipelines in flight (bounded by the timeout)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._timeout)


def _firsts(spans: list[int], commands: list[Command]) -> list[Command]:
    """The first command each pipeline entry answers."""
    firsts, start = [], 0
    for span in spans:
        firsts.append(commands[start])
        start += span
    return firsts


def _parse_reply(command: Command, reply: Any) -> EnqueueResult | Exception:
    if isinstance(reply, ResponseError):
        return reply
    if isinstance(command, TakeTokens):
        if reply[0] == 1:
            return Taken(int(reply[1]))
        return RateLimited(int(reply[1]), int(reply[2]))
    if isinstance(reply, bytes):  # a plain XADD
        return Enqueued(reply.decode())
    if reply[0] == 1:
        return Enqueued(reply[1].decode())
    payload_hash, message_id, event_id = reply[1].decode().split("|", 2)
    return AlreadyHeld(payload_hash, message_id or None, event_id)
