"""Streaks: the periods each participant was active in, and each run's state."""

from __future__ import annotations

from collections.abc import Sequence

from bricqs.storage.tenants import Conn, Tenant


async def add_streak_periods(
    conn: Conn, tenant: Tenant, periods: Sequence[tuple[str, str, int]]
) -> list[tuple[str, str, int]]:
    """Insert (streak, participant, period index); return those new."""
    if not periods:
        return []
    rows = sorted(set(periods))
    cursor = await conn.execute(
        """
        INSERT INTO streak_periods (project_id, environment, streak_code, participant_id,
            period_index)
        SELECT %s, %s, * FROM unnest(%b::text[], %b::text[], %b::int[])
        ON CONFLICT DO NOTHING
        RETURNING streak_code, participant_id, period_index
        """,
        (tenant.project_id, tenant.environment, *[[r[i] for r in rows] for i in range(3)]),
    )
    return [(r[0], r[1], int(r[2])) for r in await cursor.fetchall()]


async def read_streak_periods(
    conn: Conn, tenant: Tenant, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[int]]:
    """All active period indices per (streak, participant), ascending."""
    if not keys:
        return {}
    unique = sorted(set(keys))
    cursor = await conn.execute(
        """
        SELECT t.code, t.pid, s.periods
        FROM unnest(%b::text[], %b::text[]) AS t(code, pid)
        CROSS JOIN LATERAL (
            SELECT array_agg(period_index ORDER BY period_index) AS periods FROM streak_periods s
            WHERE s.project_id = %s AND s.environment = %s
              AND s.streak_code = t.code AND s.participant_id = t.pid
        ) s
        WHERE s.periods IS NOT NULL
        """,
        ([k[0] for k in unique], [k[1] for k in unique], tenant.project_id, tenant.environment),
    )
    return {(r[0], r[1]): list(r[2]) for r in await cursor.fetchall()}


async def save_streak_states(
    conn: Conn, tenant: Tenant, states: Sequence[tuple[str, str, int, int, int, str]]
) -> None:
    """Upsert (streak, participant, last_index, last_run_length, longest, timezone)."""
    if not states:
        return
    rows = sorted(states)
    await conn.execute(
        """
        INSERT INTO streak_state AS s (project_id, environment, streak_code, participant_id,
            last_index, last_run_length, longest, timezone)
        SELECT %s, %s, * FROM unnest(%b::text[], %b::text[], %b::int[], %b::int[], %b::int[],
                                     %b::text[])
        ON CONFLICT (project_id, environment, streak_code, participant_id) DO UPDATE SET
            last_index = EXCLUDED.last_index, last_run_length = EXCLUDED.last_run_length,
            longest = EXCLUDED.longest, timezone = EXCLUDED.timezone
        """,
        (tenant.project_id, tenant.environment, *[[r[i] for r in rows] for i in range(6)]),
    )


async def read_streak_states(
    conn: Conn, tenant: Tenant, participant_id: str
) -> dict[str, tuple[int, int, int, str]]:
    """streak code -> (last_index, last_run_length, longest, timezone) of a participant."""
    cursor = await conn.execute(
        "SELECT streak_code, last_index, last_run_length, longest, timezone FROM streak_state"
        " WHERE project_id = %s AND environment = %s AND participant_id = %s",
        (tenant.project_id, tenant.environment, participant_id),
    )
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in await cursor.fetchall()}
