"""Serialising work per participant across every writer."""

from __future__ import annotations

from collections.abc import Sequence

from bricqs.storage.tenants import Conn


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
        "SELECT pg_advisory_xact_lock(hashtextextended(p || chr(31) || e || chr(31) || pid, 0))"
        " FROM unnest(%b::text[], %b::text[], %b::text[]) WITH ORDINALITY AS t(p, e, pid, n)"
        " ORDER BY n",
        ([k[0] for k in ordered], [k[1] for k in ordered], [k[2] for k in ordered]),
    )
