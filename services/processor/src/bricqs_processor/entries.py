"""Stream entries as the processor holds them between reading and acknowledging."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from bricqs.schemas import ENVELOPE_FIELD, Envelope, decode_envelope


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
