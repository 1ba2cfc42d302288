"""Moving entries to the dead-letter stream of their shard.

The move is one MULTI per shard: XADD to the dead-letter stream (original bytes, reason,
origin, delivery count), then XACK on the event stream. Both keys share the shard's hash
tag, so the transaction runs on one node even in Redis Cluster, and an entry is never
acknowledged without its dead letter, nor dead-lettered and left pending.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bricqs.redis_connect import RedisClient
from bricqs.stream import CONSUMER_GROUP, DeadLetter, dead_letter_key, shard_of
from bricqs_processor.entries import Entry
from bricqs_processor.metrics import DEAD_LETTERED

log = logging.getLogger("bricqs.processor")

MAX_REASON_CHARS = 1_000


async def delivery_counts(
    redis: RedisClient, stream: str, consumer: str, message_ids: Sequence[str]
) -> dict[str, int]:
    """How often each of `consumer`'s pending entries was delivered (the XPENDING counter).

    XPENDING is asked for the consumer's own entries over the ids' range: those in hand
    are all it normally holds, so one page finds them, however many entries other
    consumers hold in between. Entries no longer pending are left out.
    """
    if not message_ids:
        return {}
    wanted = set(message_ids)
    counts: dict[str, int] = {}
    low, high = min(message_ids, key=_id_key), max(message_ids, key=_id_key)
    while True:
        rows = await redis.xpending_range(
            stream, CONSUMER_GROUP, min=low, max=high, count=len(wanted), consumername=consumer
        )
        for row in rows:
            message_id = _text(row["message_id"])
            if message_id in wanted:
                counts[message_id] = int(row["times_delivered"])
        if len(rows) < len(wanted) or counts.keys() == wanted:
            return counts
        # The consumer holds more in this range than the ids asked about (an
        # acknowledgement given up at shutdown, say): read on past the page.
        low = "(" + _text(rows[-1]["message_id"])


async def dead_letter(
    redis: RedisClient, consumer: str, failed: Sequence[tuple[Entry, str]]
) -> None:
    """Move entries `consumer` holds to their shard's dead-letter stream with a reason,
    and ack them.

    Raises RedisError when Redis does not answer; nothing is half done per shard then.
    """
    by_shard: dict[int, list[tuple[Entry, str]]] = {}
    for entry, reason in failed:
        by_shard.setdefault(shard_of(entry.stream), []).append((entry, reason))
    for shard, items in by_shard.items():
        unknown: dict[str, list[str]] = {}
        for entry, _ in items:
            if entry.deliveries is None:
                unknown.setdefault(entry.stream, []).append(entry.message_id)
        counts: dict[str, int] = {}
        for stream, ids in unknown.items():
            counts.update(await delivery_counts(redis, stream, consumer, ids))
        async with redis.pipeline(transaction=True) as pipe:
            for entry, reason in items:
                deliveries = entry.deliveries or counts.get(entry.message_id, 1)
                letter = DeadLetter(
                    payload=entry.payload or b"",
                    reason=reason[:MAX_REASON_CHARS],
                    stream=entry.stream,
                    message_id=entry.message_id,
                    deliveries=deliveries,
                )
                pipe.xadd(dead_letter_key(shard), letter.fields())  # type: ignore[arg-type]
                pipe.xack(entry.stream, CONSUMER_GROUP, entry.message_id)
            await pipe.execute()
        for entry, reason in items:
            category = reason.split(":", 1)[0]
            DEAD_LETTERED.labels(category).inc()
            log.warning(
                "dead-lettered stream=%s message_id=%s reason=%s",
                entry.stream,
                entry.message_id,
                reason[:200],
            )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(message_id: str) -> tuple[int, int]:
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq or 0)
