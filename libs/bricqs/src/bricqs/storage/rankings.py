"""Leaderboard rankings, read from the ledger and from criterion progress."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

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
        -- Points earned: refunds give back points spent, they were not earned.
        WHERE project_id = %s AND environment = %s AND amount > 0 AND kind <> 'refund'
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
            ORDER BY score DESC, reached_at ASC, participant_id ASC
            """,  # noqa: S608 - the column comes from a fixed mapping, never from input
            (tenant.project_id, tenant.environment, criterion_id, bucket),
        )
    return [(r[0], float(r[1]), r[2]) for r in await cursor.fetchall()]


# ---------------------------------------------------------------------------------------
# Standings kept per board and run (leaderboard_scores), written in the storing transaction


def _board_lock(tenant: Tenant, code: str) -> str:
    return f"lb{chr(30)}{tenant.project_id}{chr(31)}{tenant.environment}{chr(31)}{code}"


async def built_boards(conn: Conn, tenant: Tenant, shapes: dict[str, str]) -> set[str]:
    """Of `shapes` (code -> shape), the boards built for that shape.

    Takes each board's lock shared for the transaction first, so a rebuild (which takes
    it exclusive) never runs between this writer's standings and its mirror push.
    """
    codes = sorted(shapes)
    cursor = await conn.execute(
        """
        SELECT t.code, b.shape
        FROM unnest(%b::text[]) WITH ORDINALITY AS t(code, n)
        CROSS JOIN LATERAL (SELECT pg_advisory_xact_lock_shared(hashtextextended(
            %s || t.code, 0))) AS locked
        LEFT JOIN leaderboard_builds b
          ON b.project_id = %s AND b.environment = %s AND b.leaderboard = t.code
        ORDER BY t.n
        """,
        (codes, _board_lock(tenant, ""), tenant.project_id, tenant.environment),
    )
    return {code for code, shape in await cursor.fetchall() if shape == shapes[code]}


async def built_shape(conn: Conn, tenant: Tenant, code: str) -> str | None:
    """The shape the board was last built for (None: never built); takes no lock."""
    cursor = await conn.execute(
        "SELECT shape FROM leaderboard_builds"
        " WHERE project_id = %s AND environment = %s AND leaderboard = %s",
        (tenant.project_id, tenant.environment, code),
    )
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def lock_board(conn: Conn, tenant: Tenant, code: str) -> None:
    """Take the board's lock exclusive for the transaction: no writer runs meanwhile."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_board_lock(tenant, code),)
    )


class ScoreRow(NamedTuple):
    """One participant's standing on one run of a board."""

    leaderboard: str
    run: int
    participant_id: str
    score: float
    reached_at: datetime
    group: str = ""


async def add_to_scores(conn: Conn, tenant: Tenant, rows: Sequence[ScoreRow]) -> list[ScoreRow]:
    """Add each row's score to the standings (reach time: the latest); the new rows."""
    return await _write_scores(conn, tenant, rows, add=True)


async def set_scores(conn: Conn, tenant: Tenant, rows: Sequence[ScoreRow]) -> list[ScoreRow]:
    """Set the rows as the standings; the rows written."""
    return await _write_scores(conn, tenant, rows, add=False)


async def _write_scores(
    conn: Conn, tenant: Tenant, rows: Sequence[ScoreRow], *, add: bool
) -> list[ScoreRow]:
    if not rows:
        return []
    ordered = sorted(rows, key=lambda r: (r.leaderboard, r.run, r.participant_id))
    update = (
        "score = s.score + EXCLUDED.score, reached_at = greatest(s.reached_at, EXCLUDED.reached_at)"
        if add
        else "score = EXCLUDED.score, reached_at = EXCLUDED.reached_at"
    )
    cursor = await conn.execute(
        f"""
        INSERT INTO leaderboard_scores AS s (project_id, environment, leaderboard, run,
            participant_id, score, reached_at, group_value)
        SELECT %s, %s, t.code, t.run, t.pid, t.score, t.at, t.grp
        FROM unnest(%b::text[], %b::int[], %b::text[], %b::float8[], %b::timestamptz[],
            %b::text[]) AS t(code, run, pid, score, at, grp)
        ON CONFLICT (project_id, environment, leaderboard, run, participant_id)
        DO UPDATE SET {update}, group_value = EXCLUDED.group_value
        RETURNING leaderboard, run, participant_id, score, reached_at, group_value
        """,  # noqa: S608 - `update` is one of two fixed texts, never from input
        (
            tenant.project_id,
            tenant.environment,
            [r.leaderboard for r in ordered],
            [r.run for r in ordered],
            [r.participant_id for r in ordered],
            [float(r.score) for r in ordered],
            [r.reached_at for r in ordered],
            [r.group for r in ordered],
        ),
    )
    return [ScoreRow(r[0], r[1], r[2], float(r[3]), r[4], r[5]) for r in await cursor.fetchall()]


async def regroup(
    conn: Conn, tenant: Tenant, participant_id: str, moves: Sequence[tuple[str, int, str]]
) -> None:
    """Set the participant's group on (board, run, new group) standings it has."""
    for code, run, group in moves:
        await conn.execute(
            "UPDATE leaderboard_scores SET group_value = %s WHERE project_id = %s"
            " AND environment = %s AND leaderboard = %s AND run = %s AND participant_id = %s",
            (group, tenant.project_id, tenant.environment, code, run, participant_id),
        )


async def criterion_values(
    conn: Conn,
    tenant: Tenant,
    criterion_id: str,
    aggregate: str,
    bucket: str,
    participant_ids: Sequence[str],
) -> list[tuple[str, float, datetime]]:
    """(participant, value, reached_at) of those of `participant_ids` with a value."""
    pids = sorted(set(participant_ids))
    if aggregate == "distinct":
        cursor = await conn.execute(
            """
            SELECT participant_id, count(*)::float8, max(first_at)
            FROM criterion_distinct
            WHERE project_id = %s AND environment = %s AND criterion_id = %s AND bucket = %s
              AND participant_id = ANY(%s)
            GROUP BY participant_id
            """,
            (tenant.project_id, tenant.environment, criterion_id, bucket, pids),
        )
    else:
        column = {"count": "count::float8", "sum": "sum", "max": "max"}[aggregate]
        cursor = await conn.execute(
            f"""
            SELECT participant_id, {column}, reached_at FROM criterion_progress
            WHERE project_id = %s AND environment = %s AND criterion_id = %s AND bucket = %s
              AND participant_id = ANY(%s) AND {column} IS NOT NULL
            """,  # noqa: S608 - the column comes from a fixed mapping, never from input
            (tenant.project_id, tenant.environment, criterion_id, bucket, pids),
        )
    return [(r[0], float(r[1]), r[2]) for r in await cursor.fetchall()]


async def replace_run(
    conn: Conn,
    tenant: Tenant,
    code: str,
    run: int,
    shape: str,
    standings: Sequence[ScoreRow],
) -> None:
    """Replace run `run` of board `code` with `standings` and record it built for `shape`.

    The caller holds the board's lock (`lock_board`)."""
    key = (tenant.project_id, tenant.environment, code)
    await conn.execute(
        "DELETE FROM leaderboard_scores"
        " WHERE project_id = %s AND environment = %s AND leaderboard = %s AND run = %s",
        (*key, run),
    )
    async with conn.cursor().copy(
        "COPY leaderboard_scores (project_id, environment, leaderboard, run, participant_id,"
        " score, reached_at, group_value) FROM STDIN"
    ) as copy:
        for row in standings:
            await copy.write_row(
                (*key, run, row.participant_id, row.score, row.reached_at, row.group)
            )
    await conn.execute(
        "INSERT INTO leaderboard_builds (project_id, environment, leaderboard, shape, built_at)"
        " VALUES (%s, %s, %s, %s, now())"
        " ON CONFLICT (project_id, environment, leaderboard)"
        " DO UPDATE SET shape = EXCLUDED.shape, built_at = EXCLUDED.built_at",
        (*key, shape),
    )


async def run_standings(conn: Conn, tenant: Tenant, code: str, run: int) -> list[ScoreRow]:
    """Every standing of run `run` of board `code`."""
    cursor = await conn.execute(
        "SELECT participant_id, score, reached_at, group_value FROM leaderboard_scores"
        " WHERE project_id = %s AND environment = %s AND leaderboard = %s AND run = %s",
        (tenant.project_id, tenant.environment, code, run),
    )
    return [ScoreRow(code, run, r[0], float(r[1]), r[2], r[3]) for r in await cursor.fetchall()]


async def note_runs(
    conn: Conn, tenant: Tenant, runs: Sequence[tuple[str, int, datetime | None, datetime | None]]
) -> None:
    """Record (code, run, starts_at, ends_at) as runs with standings (once each)."""
    if not runs:
        return
    ordered = sorted(set(runs), key=lambda r: (r[0], r[1]))
    await conn.execute(
        "INSERT INTO leaderboard_runs (project_id, environment, leaderboard, run, starts_at,"
        " ends_at) SELECT %s, %s, t.code, t.run, t.s, t.e"
        " FROM unnest(%b::text[], %b::int[], %b::timestamptz[], %b::timestamptz[])"
        " AS t(code, run, s, e) ON CONFLICT DO NOTHING",
        (
            tenant.project_id,
            tenant.environment,
            [r[0] for r in ordered],
            [r[1] for r in ordered],
            [r[2] for r in ordered],
            [r[3] for r in ordered],
        ),
    )


async def board_runs(
    conn: Conn, tenant: Tenant, code: str, before: int | None, limit: int
) -> list[tuple[int, datetime | None, datetime | None]]:
    """(run, starts_at, ends_at) of board `code`, newest first, below run `before`."""
    cursor = await conn.execute(
        "SELECT run, starts_at, ends_at FROM leaderboard_runs"
        " WHERE project_id = %s AND environment = %s AND leaderboard = %s"
        " AND (%s::int IS NULL OR run < %s) ORDER BY run DESC LIMIT %s",
        (tenant.project_id, tenant.environment, code, before, before, limit),
    )
    return [(r[0], r[1], r[2]) for r in await cursor.fetchall()]


async def finish_runs(conn: Conn, tenant: Tenant, code: str, current: int) -> list[int]:
    """Mark the board's runs before `current` that are not yet finished as finished; the
    runs this call marked (a concurrent writer's commit makes its later call mark none)."""
    cursor = await conn.execute(
        "UPDATE leaderboard_runs SET finished_at = now()"
        " WHERE project_id = %s AND environment = %s AND leaderboard = %s AND run < %s"
        " AND finished_at IS NULL RETURNING run",
        (tenant.project_id, tenant.environment, code, current),
    )
    return sorted(r[0] for r in await cursor.fetchall())


async def run_leaders(
    conn: Conn, tenant: Tenant, code: str, run: int, top: int
) -> list[tuple[str, int, str, float, int]]:
    """The `top` of each group of a run: (group, rank, participant, score, group size).

    Sorts the run's rows once: called once per run, when it finishes."""
    cursor = await conn.execute(
        """
        SELECT group_value, rank, participant_id, score, size FROM (
            SELECT group_value, participant_id, score,
                   row_number() OVER w AS rank,
                   count(*) OVER (PARTITION BY group_value) AS size
            FROM leaderboard_scores
            WHERE project_id = %s AND environment = %s AND leaderboard = %s AND run = %s
            WINDOW w AS (PARTITION BY group_value
                         ORDER BY score DESC, reached_at ASC, participant_id ASC)
        ) ranked
        WHERE rank <= %s
        ORDER BY group_value, rank
        """,
        (tenant.project_id, tenant.environment, code, run, top),
    )
    return [(r[0], int(r[1]), r[2], float(r[3]), int(r[4])) for r in await cursor.fetchall()]
