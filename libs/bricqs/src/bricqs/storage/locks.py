"""Serialising work per participant across every writer."""

from __future__ import annotations

from collections.abc import Sequence

from bricqs.storage.arrays import text_columns, unnest_texts
from bricqs.storage.tenants import Conn

_LOCK_IN_ORDER = f"""
    SELECT pg_advisory_xact_lock(hashtextextended(p || chr(31) || e || chr(31) || pid, 0))
    FROM unnest({unnest_texts(3)}) WITH ORDINALITY AS t(p, e, pid, n) ORDER BY n
"""  # noqa: S608 - fixed SQL fragments, never input


async def lock_participants(conn: Conn, keys: Sequence[tuple[str, str, str]]) -> None:
    """Take transaction-scoped advisory locks on participants, in sorted order.

    Every writer (processor replicas, the sync endpoint, the api's manual awards) takes
    these before touching a participant's mechanics state, so read-then-write steps
    (thresholds, caps, streak runs) never interleave, and sorted order rules out deadlocks.
    """
    if not keys:
        return
    ordered = sorted(set(keys))
    await conn.execute(
        _LOCK_IN_ORDER,
        text_columns(ordered, 3),
    )


async def try_lock_participants(
    conn: Conn, keys: Sequence[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    """Take the locks of `lock_participants` that are free now, without waiting; those
    taken. For a writer that already holds row locks a locking writer may wait on (the
    scheduler's claimed deadlines), where waiting could deadlock."""
    if not keys:
        return set()
    ordered = sorted(set(keys))
    cursor = await conn.execute(
        "SELECT n FROM unnest(%b::text[], %b::text[], %b::text[]) WITH ORDINALITY"
        " AS t(p, e, pid, n)"
        " WHERE pg_try_advisory_xact_lock(hashtextextended(p || chr(31) || e || chr(31) || pid, 0))"
        " ORDER BY n",
        ([k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered]),
    )
    return {ordered[int(r[0]) - 1] for r in await cursor.fetchall()}
