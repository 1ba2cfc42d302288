"""A participant's data in Redis: their still-queued events, and the keys and members
that name them, found by one SCAN of the keyspace and removed by type.

- Event streams (and their dead letters) hold envelopes; an entry of the participant is
  removed once the consumer group has processed it (delivered, and no longer pending),
  so that its outcomes reach PostgreSQL before the rows are erased. While one is still
  queued the erasure waits (`Queued.waiting`).
- Any other key is looked at only if its name holds the tenant (project id and
  environment as segments): a key named after the participant is deleted; a sorted set,
  set, list or hash loses the participant's member or field; a string naming one of the
  participant's event ids (an idempotency key) is deleted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bricqs.redis_connect import RedisClient
from bricqs.schemas import ENVELOPE_FIELD, Envelope, decode_envelope
from bricqs.storage.tenants import Tenant
from bricqs.stream import CONSUMER_GROUP, STREAM_PREFIX

_PAGE = 500
# Keys looked at per SCAN call: an erasure walks the whole keyspace, in few round trips.
_SCAN_COUNT = 1000


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Queued:
    """The participant's entries on the event streams."""

    entries: dict[str, list[str]] = field(default_factory=dict)
    """Entry ids by stream."""
    waiting: int = 0
    """How many of them the processors have yet to process."""
    events: dict[str, Envelope] = field(default_factory=dict)
    """The queued (or dead-lettered) events themselves, by event id."""

    @property
    def event_ids(self) -> set[str]:
        return set(self.events)


def _segment(value: str) -> re.Pattern[str]:
    """`value` as a whole segment of a key name (between `:`, `{`, `}` or the ends)."""
    return re.compile(rf"(?:^|[:{{}}]){re.escape(value)}(?:$|[:{{}}])")


class ParticipantKeys:
    """Finds and removes one participant's data in Redis."""

    def __init__(self, redis: RedisClient, tenant: Tenant, participant_id: str) -> None:
        self.redis, self.tenant, self.participant_id = redis, tenant, participant_id
        self._names_participant = _segment(participant_id)
        self._names_tenant = (_segment(tenant.project_id), _segment(tenant.environment))

    async def queued(self) -> Queued:
        """The participant's stream entries, and whether each has been processed."""
        found = Queued()
        streams = self.redis.scan_iter(
            match=f"{STREAM_PREFIX}:*", _type="stream", count=_SCAN_COUNT
        )
        async for raw in streams:
            stream = _text(raw)
            ids = await self._entries_of(stream, found.events)
            if not ids:
                continue
            found.entries[stream] = ids
            if not stream.endswith(":dlq"):
                found.waiting += await self._unprocessed(stream, ids)
        return found

    async def _entries_of(self, stream: str, events: dict[str, Envelope]) -> list[str]:
        """Ids of the participant's entries on `stream`, read a page at a time."""
        ids: list[str] = []
        start = "-"
        while True:
            page: list[Any] = await self.redis.xrange(stream, min=start, count=_PAGE) or []
            for entry_id, fields in page:
                envelope = self._envelope(fields.get(ENVELOPE_FIELD, b""))
                if envelope is not None:
                    ids.append(_text(entry_id))
                    events[envelope.event_id] = envelope
            if len(page) < _PAGE:
                return ids
            start = "(" + _text(page[-1][0])

    def _envelope(self, payload: bytes) -> Envelope | None:
        """The envelope in `payload` if it is one of the participant's, else None."""
        try:
            envelope = decode_envelope(payload)
        except (msgspec.DecodeError, ValueError):
            return None
        mine = (envelope.project_id, envelope.environment, envelope.participant_id) == (
            self.tenant.project_id,
            self.tenant.environment,
            self.participant_id,
        )
        return envelope if mine else None

    async def _unprocessed(self, stream: str, ids: list[str]) -> int:
        """How many of `ids` the consumer group has not delivered, or not acknowledged."""
        groups = [
            g for g in await self.redis.xinfo_groups(stream) if _text(g["name"]) == CONSUMER_GROUP
        ]
        if not groups:
            return len(ids)
        delivered = _stream_id(_text(groups[0]["last-delivered-id"]))
        waiting = 0
        for entry_id in ids:
            pending = await self.redis.xpending_range(
                stream, CONSUMER_GROUP, min=entry_id, max=entry_id, count=1
            )
            waiting += bool(pending) or _stream_id(entry_id) > delivered
        return waiting

    async def remove_entries(self, queued: Queued) -> int:
        """Delete the participant's (processed) stream entries; how many."""
        removed = 0
        for stream, ids in queued.entries.items():
            removed += await self.redis.xdel(stream, *ids)
        return removed

    async def remove_keys(self, event_ids: set[str]) -> int:
        """Delete or trim the tenant's keys that hold the participant; how many changed."""
        changed = 0
        async for raw in self.redis.scan_iter(
            match=f"*{_glob(self.tenant.project_id)}*", count=_SCAN_COUNT
        ):
            key = _text(raw)
            if all(p.search(key) for p in self._names_tenant):
                changed += await self._remove_from(key, event_ids)
        return changed

    async def _remove_from(self, key: str, event_ids: set[str]) -> int:
        if self._names_participant.search(key):
            return int(await self.redis.delete(key))
        kind = _text(await self.redis.type(key))
        member = self.participant_id
        if kind == "zset":
            return int(await self.redis.zrem(key, member))
        if kind == "set":
            return int(await self.redis.srem(key, member))
        if kind == "hash":
            return int(await self.redis.hdel(key, member))
        if kind == "list":
            return int(await self.redis.lrem(key, 0, member) > 0)
        if kind == "string":
            value = _text(await self.redis.get(key) or b"")
            # An idempotency key's value ends with the event id it names.
            if value.rpartition("|")[2] in event_ids:
                return int(await self.redis.delete(key))
        return 0


def _glob(value: str) -> str:
    """`value` as a literal in a SCAN MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", value)
