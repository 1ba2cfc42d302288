"""Reclaiming entries that a consumer took and never acknowledged (it died, or hung).

`XAUTOCLAIM` walks the group's pending list from a cursor and moves entries idle longer
than the minimum to us, counting a delivery for each. On Redis 7 the reply has three
elements: the next cursor, the claimed entries, and the ids of entries that were pending
but no longer exist in the stream (already dropped from the pending list by Redis; we
acknowledge them anyway, which is a no-op there and correct on older servers). redis-py's
`justid=True` would drop both the cursor and the deleted ids, so it is not used.

The delivery count from `XPENDING` is the dead-letter signal: the caller sends entries
delivered more than `MAX_DELIVERIES` times to the dead-letter stream.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from bricqs.redis_connect import RedisClient
from bricqs.stream import CONSUMER_GROUP
from bricqs_processor.deadletter import delivery_counts
from bricqs_processor.entries import Entry, entries_from_reply
from bricqs_processor.metrics import RECLAIMED

log = logging.getLogger("bricqs.processor")


async def reclaim_stuck(
    redis: RedisClient, stream: str, consumer: str, *, min_idle_ms: int, count: int
) -> AsyncIterator[list[Entry]]:
    """Claim every entry of `stream` idle for `min_idle_ms` or more, page by page.

    Yields each page of claimed entries with `deliveries` filled in; the caller must
    process (or dead-letter) a page before asking for the next.
    """
    cursor: bytes | str = "0-0"
    while True:
        reply = await redis.xautoclaim(
            stream, CONSUMER_GROUP, consumer, min_idle_ms, start_id=cursor, count=count
        )
        cursor, items = reply[0], reply[1]
        deleted = [_text(i) for i in (reply[2] if len(reply) > 2 else [])]
        entries, vanished = entries_from_reply(stream, items)
        deleted += vanished
        if deleted:
            await redis.xack(stream, CONSUMER_GROUP, *deleted)
            log.warning(
                "%d pending entries of %s were deleted from the stream before being"
                " processed; acknowledged",
                len(deleted),
                stream,
            )
        if entries:
            RECLAIMED.inc(len(entries))
            counts = await delivery_counts(redis, stream, consumer, [e.message_id for e in entries])
            for entry in entries:
                # A missing count means it left the pending list just now (acknowledged
                # by its old owner after all); storing it again is harmless.
                entry.deliveries = counts.get(entry.message_id, 1)
            log.info("reclaimed %d idle entries of %s", len(entries), stream)
            yield entries
        if _text(cursor) == "0-0":
            return


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
