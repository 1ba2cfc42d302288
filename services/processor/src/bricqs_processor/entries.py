"""Stream entries as the processor holds them between reading and acknowledging, and the
acknowledging itself."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from bricqs.redis_connect import REDIS_ERRORS, RedisClient
from bricqs.schemas import ENVELOPE_FIELD, Envelope, decode_envelope
from bricqs.stream import CONSUMER_GROUP

log = logging.getLogger("bricqs.processor")


@dataclass(slots=True)
class Entry:
    """One stream entry in hand: where it is, its payload, and its envelope once decoded."""

    stream: str
    message_id: str
    payload: bytes | None
    """The envelope field's bytes; None when the entry has no such field."""
    envelope: Envelope | None = None
    deliveries: int | None = None
    """Delivery count from XPENDING, when it was looked up (reclaimed entries)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def entries_from_reply(stream: bytes | str, items: Iterable[Any]) -> tuple[list[Entry], list[str]]:
    """Entries from the `(id, fields)` pairs of XREADGROUP, XCLAIM or XAUTOCLAIM, and the
    ids of entries deleted from the stream while pending (Redis 6 returns them with no
    fields; Redis 7 lists them apart), which only need acknowledging.
    """
    name = _text(stream)
    entries: list[Entry] = []
    deleted: list[str] = []
    for message_id, fields in items:
        if message_id is None:
            continue
        if fields is None:
            deleted.append(_text(message_id))
            continue
        entries.append(Entry(name, _text(message_id), fields.get(ENVELOPE_FIELD)))
    return entries, deleted


def decode_entries(entries: Iterable[Entry]) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    """Split entries into decoded ones and undecodable ones (with the reason)."""
    good: list[Entry] = []
    bad: list[tuple[Entry, str]] = []
    for entry in entries:
        if entry.payload is None:
            bad.append((entry, "decode_error: the entry has no envelope field"))
            continue
        try:
            entry.envelope = decode_envelope(entry.payload)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
            bad.append((entry, f"decode_error: {exc}"))
            continue
        good.append(entry)
    return good, bad


def by_stream(entries: Iterable[Entry]) -> dict[str, list[str]]:
    """Message ids grouped by stream, in order, for XACK and XCLAIM."""
    grouped: dict[str, list[str]] = {}
    for entry in entries:
        grouped.setdefault(entry.stream, []).append(entry.message_id)
    return grouped


async def acknowledge(redis: RedisClient, entries: Sequence[Entry]) -> None:
    """XACK entries (one round trip, whatever the streams they come from)."""
    grouped = by_stream(entries)
    if len(grouped) == 1:
        ((stream, ids),) = grouped.items()
        await redis.xack(stream, CONSUMER_GROUP, *ids)
        return
    async with redis.pipeline(transaction=False) as pipe:
        for stream, ids in grouped.items():
            pipe.xack(stream, CONSUMER_GROUP, *ids)
        await pipe.execute()


async def keep_claim(
    redis: RedisClient, consumer: str, parts: list[list[Entry]]
) -> list[list[Entry]]:
    """Re-claim the entries `consumer` has in hand (resetting their idle time, counting no
    delivery); drop any that are no longer pending, because someone else acknowledged
    them."""
    entries = [e for part in parts for e in part]
    still: set[tuple[str, str]] = set()
    try:
        for stream, ids in by_stream(entries).items():
            ids_any: list[Any] = list(ids)
            claimed: Any = await redis.xclaim(
                stream, CONSUMER_GROUP, consumer, 0, ids_any, justid=True
            )
            still.update((stream, _text(i)) for i in claimed)
    except REDIS_ERRORS as exc:
        log.warning("could not refresh the claim on the batch in hand: %s", exc)
        return parts
    kept = [[e for e in part if (e.stream, e.message_id) in still] for part in parts]
    return [part for part in kept if part]
