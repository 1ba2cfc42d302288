"""Streaks: each run's state, with the periods its participant was active in and the
deadline the scheduler judges it at, and the periods an admin bridged."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

from bricqs.storage.arrays import (
    TEXTS,
    int4_array,
    integers,
    integers_sql,
    text_array,
    text_columns,
    texts,
    timestamptz_array,
    unnest_texts,
)
from bricqs.storage.tenants import Conn, Tenant

# A deadline only moves forward: a run already watching a later period keeps it (a late
# fact never takes back what the scheduler already judged); none given (NULL) keeps it.
_MOVES = """(EXCLUDED.deadline_period IS NOT NULL
    AND (s.deadline_period IS NULL OR EXCLUDED.deadline_period > s.deadline_period))"""
_SAVE_STATES = f"""
    INSERT INTO streak_state AS s (project_id, environment, streak_code, participant_id,
        last_index, last_run_length, longest, timezone, periods,
        deadline_period, at_risk_at, ends_at)
    SELECT %s, %s, * FROM unnest({unnest_texts(2)}, {integers_sql("int4")},
                                 {integers_sql("int4")}, {integers_sql("int4")}, {TEXTS},
                                 ({TEXTS})::int4multirange[],
                                 %b::int4[], %b::timestamptz[], %b::timestamptz[])
    ON CONFLICT (project_id, environment, streak_code, participant_id) DO UPDATE SET
        last_index = EXCLUDED.last_index, last_run_length = EXCLUDED.last_run_length,
        longest = EXCLUDED.longest, timezone = EXCLUDED.timezone,
        periods = s.periods + EXCLUDED.periods,
        deadline_period = CASE WHEN {_MOVES} THEN EXCLUDED.deadline_period
                               ELSE s.deadline_period END,
        at_risk_at = CASE WHEN {_MOVES} THEN EXCLUDED.at_risk_at ELSE s.at_risk_at END,
        ends_at = CASE WHEN {_MOVES} THEN EXCLUDED.ends_at ELSE s.ends_at END
    WHERE (s.last_index, s.last_run_length, s.longest, s.timezone)
        IS DISTINCT FROM (EXCLUDED.last_index, EXCLUDED.last_run_length, EXCLUDED.longest,
                          EXCLUDED.timezone)
        OR NOT s.periods @> EXCLUDED.periods OR {_MOVES}
"""  # noqa: S608 - fixed SQL fragments, never input

# The runs of each pair's active periods, as the first and the one-past-last period of
# each: a multirange's ranges come out of `unnest` ascending and never touch. (Expanding
# them to periods here, with generate_series, made the planner guess 100,000 rows per
# pair, and its cost estimate had the statement JIT-compiled: 180 ms per batch.)
_READ_PERIODS = """
    SELECT t.code, t.pid, s.firsts, s.ends, b.periods
    FROM unnest(%b::text[], %b::text[]) AS t(code, pid)
    CROSS JOIN LATERAL (
        SELECT ARRAY(SELECT lower(r) FROM unnest(s.periods) AS r) AS firsts,
               ARRAY(SELECT upper(r) FROM unnest(s.periods) AS r) AS ends
        FROM streak_state s
        WHERE s.project_id = %s AND s.environment = %s
          AND s.streak_code = t.code AND s.participant_id = t.pid AND NOT isempty(s.periods)
        OFFSET 0  -- a lookup per key: see the storage package on batch reads
    ) s
    CROSS JOIN LATERAL (
        SELECT array_agg(period_index ORDER BY period_index) AS periods FROM streak_bridges b
        WHERE b.project_id = %s AND b.environment = %s
          AND b.streak_code = t.code AND b.participant_id = t.pid
    ) b
"""


async def read_streak_periods(
    conn: Conn, tenant: Tenant, keys: Sequence[tuple[str, str]]
) -> tuple[dict[tuple[str, str], list[int]], dict[tuple[str, str], list[int]]]:
    """The active and the bridged period indices per (streak, participant), ascending, in
    one round trip; a pair never active is absent from both."""
    if not keys:
        return {}, {}
    unique = sorted(set(keys))
    cursor = await conn.execute(
        _READ_PERIODS,
        (
            text_array([k[0] for k in unique]),
            text_array([k[1] for k in unique]),
            *(tenant.project_id, tenant.environment) * 2,
        ),
        binary=True,
    )
    active: dict[tuple[str, str], list[int]] = {}
    bridged: dict[tuple[str, str], list[int]] = {}
    for code, pid, firsts, ends, kept in await cursor.fetchall():
        periods: list[int] = []
        for first, end in zip(firsts, ends, strict=True):
            periods.extend(range(first, end))
        active[(code, pid)] = periods
        if kept:
            bridged[(code, pid)] = kept
    return active, bridged


def _multirange(indices: Iterable[int]) -> str:
    """A multirange literal of single periods (PostgreSQL merges adjacent ones)."""
    return "{" + ",".join([f"[{i},{i}]" for i in indices]) + "}"


async def save_streak_states(
    conn: Conn,
    tenant: Tenant,
    states: Sequence[tuple[str, str, int, int, int, str]],
    added: Mapping[tuple[str, str], Sequence[int]] | None = None,
    deadlines: Mapping[tuple[str, str], Deadline] | None = None,
) -> None:
    """Upsert (streak, participant, last_index, last_run_length, longest, timezone), add
    the periods `added` names for a (streak, participant) to its active periods, and
    watch the deadline `deadlines` gives it, when that is later than the one watched.

    Periods are added as a union, so writing them twice is writing them once. A state
    that did not change is not written again: a new row version costs as much as a
    changed one, and a restore's state often equals the one stored."""
    if not states:
        return
    rows = sorted(states)
    new, watch = added or {}, deadlines or {}
    due = [watch.get((r[0], r[1])) for r in rows]
    await conn.execute(
        _SAVE_STATES,
        (
            tenant.project_id,
            tenant.environment,
            *text_columns(rows, 2),
            integers([r[2] for r in rows]),
            integers([r[3] for r in rows]),
            integers([r[4] for r in rows]),
            *texts([r[5] for r in rows]),
            *texts([_multirange(new.get((r[0], r[1]), ())) for r in rows]),
            int4_array([None if d is None else d.period for d in due]),
            timestamptz_array([None if d is None else d.at_risk_at for d in due]),
            timestamptz_array([None if d is None else d.ends_at for d in due]),
        ),
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


# ---------------------------------------------------------------------------------------
# Freezes, restores and deadlines (migrations 0017 and 0023)


class Deadline(NamedTuple):
    """When a participant's run is next judged: `period` is the period being watched,
    `at_risk_at` when `streak.at_risk` is owed (None: not owed or already emitted),
    `ends_at` when the period ends."""

    tenant: Tenant
    streak_code: str
    participant_id: str
    period: int
    timezone: str
    at_risk_at: datetime | None
    ends_at: datetime


async def add_bridged_periods(
    conn: Conn, tenant: Tenant, streak_code: str, participant_id: str, periods: Sequence[int]
) -> list[int]:
    """Record missed periods an admin restored as bridged; those new, ascending."""
    if not periods:
        return []
    cursor = await conn.execute(
        "INSERT INTO streak_bridges (project_id, environment, streak_code, participant_id,"
        " period_index) SELECT %s, %s, %s, %s, p FROM unnest(%b::int[]) AS p"
        " ON CONFLICT DO NOTHING RETURNING period_index",
        (tenant.project_id, tenant.environment, streak_code, participant_id, sorted(periods)),
    )
    return sorted(int(r[0]) for r in await cursor.fetchall())


async def claim_due_deadlines(conn: Conn, now: datetime, limit: int) -> list[Deadline]:
    """Lock up to `limit` deadlines due by `now`, earliest first, skipping those another
    transaction holds: the caller's transaction owns them until it ends, and a rollback
    (or a killed process) leaves them due."""
    cursor = await conn.execute(
        "SELECT project_id, environment, streak_code, participant_id, deadline_period, timezone,"
        " at_risk_at, ends_at FROM streak_state WHERE due_at <= %s"
        " ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (now, limit),
    )
    return [
        Deadline(Tenant(r[0], r[1]), r[2], r[3], r[4], r[5], r[6], r[7])
        for r in await cursor.fetchall()
    ]


async def replace_deadlines(
    conn: Conn, changes: Sequence[tuple[Deadline, Deadline | None]]
) -> None:
    """Move claimed deadlines to what comes next, or drop them (None: nothing to watch);
    two statements whatever their number."""
    gone = [old for old, new in changes if new is None]
    moved = [new for _, new in changes if new is not None]
    if gone:
        await conn.execute(
            "UPDATE streak_state d SET deadline_period = NULL, at_risk_at = NULL, ends_at = NULL"
            " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[]) AS t(p, e, code, pid)"
            " WHERE d.project_id = t.p AND d.environment = t.e"
            " AND d.streak_code = t.code AND d.participant_id = t.pid",
            _key_columns(gone),
        )
    if moved:
        # No timezone: a claimed deadline's is its row's, which the claim keeps locked.
        await conn.execute(
            "UPDATE streak_state d SET deadline_period = t.period,"
            " at_risk_at = t.at_risk_at, ends_at = t.ends_at"
            " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::int[],"
            " %b::timestamptz[], %b::timestamptz[])"
            " AS t(p, e, code, pid, period, at_risk_at, ends_at)"
            " WHERE d.project_id = t.p AND d.environment = t.e AND d.streak_code = t.code"
            " AND d.participant_id = t.pid",
            (
                *_key_columns(moved),
                [d.period for d in moved],
                [d.at_risk_at for d in moved],
                [d.ends_at for d in moved],
            ),
        )


def _key_columns(deadlines: Sequence[Deadline]) -> tuple[list[str], ...]:
    return (
        [d.tenant.project_id for d in deadlines],
        [d.tenant.environment for d in deadlines],
        [d.streak_code for d in deadlines],
        [d.participant_id for d in deadlines],
    )
