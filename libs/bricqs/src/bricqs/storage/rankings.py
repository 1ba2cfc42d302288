"""Leaderboard rankings, read from the ledger and from criterion progress."""

from __future__ import annotations

from datetime import datetime

from bricqs.storage.tenants import Conn, Tenant


async def points_ranking(
    conn: Conn, tenant: Tenant, since: datetime | None, until: datetime | None
) -> list[tuple[str, int, datetime]]:
    """(participant, points earned in [since, until), reached_at), best first.

    Ties go to whoever reached the score earlier, then by participant id.
    """
    cursor = await conn.execute(
        """
        SELECT participant_id, sum(amount)::bigint AS score, max(occurred_at) AS reached
        FROM points_ledger
        WHERE project_id = %s AND environment = %s AND amount > 0
          AND (%s::timestamptz IS NULL OR occurred_at >= %s)
          AND (%s::timestamptz IS NULL OR occurred_at < %s)
        GROUP BY participant_id
        ORDER BY score DESC, reached ASC, participant_id ASC
        """,
        (tenant.project_id, tenant.environment, since, since, until, until),
    )
    return [(r[0], int(r[1]), r[2]) for r in await cursor.fetchall()]


async def criterion_ranking(
    conn: Conn, tenant: Tenant, criterion_id: str, bucket: str, aggregate: str
) -> list[tuple[str, float, datetime]]:
    """(participant, value, reached_at) for one criterion bucket, best first."""
    if aggregate == "distinct":
        cursor = await conn.execute(
            """
            SELECT participant_id, count(*)::float8 AS score, max(first_at) AS reached
            FROM criterion_distinct
            WHERE project_id = %s AND environment = %s AND criterion_id = %s AND bucket = %s
            GROUP BY participant_id
            ORDER BY score DESC, reached ASC, participant_id ASC
            """,
            (tenant.project_id, tenant.environment, criterion_id, bucket),
        )
    else:
        column = {"count": "count::float8", "sum": "sum", "max": "max"}[aggregate]
        cursor = await conn.execute(
            f"""
            SELECT participant_id, {column} AS score, reached_at
            FROM criterion_progress
            WHERE project_id = %s AND environment = %s AND criterion_id = %s AND bucket = %s
              AND {column} IS NOT NULL
              AND bucket <> ''  -- always true: it selects the partial ranking index
            ORDER BY score DESC, reached_at ASC, participant_id ASC
            """,  # noqa: S608 - the column comes from a fixed mapping, never from input
            (tenant.project_id, tenant.environment, criterion_id, bucket),
        )
    return [(r[0], float(r[1]), r[2]) for r in await cursor.fetchall()]
