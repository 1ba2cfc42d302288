"""SQL of the mechanics: definitions, progress, ledger, awards, streaks, and their reads.

Every write takes whole batches (arrays through unnest), so applying mechanics to a batch
of facts costs a fixed number of round trips whatever its size.

Arrays go as binary parameters (`%b`): psycopg dumps them several times faster than as
text, where every element is escaped.

Batch reads look keys up one by one from the array side (`unnest(...) CROSS JOIN LATERAL`
on the primary key; `OFFSET 0` keeps the planner from flattening the subquery), never as
a join the planner may turn around: on a table that grew since it was last analysed,
psycopg's prepared statements get a generic plan that scans the tenant's rows once per
key (seconds per batch, past the statement timeout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from psycopg import AsyncConnection

Conn = AsyncConnection[Any]


@dataclass(frozen=True)
class Tenant:
    """A (project, environment) pair: the scope of every query here."""

    project_id: str
    environment: str


# ---------------------------------------------------------------------------------------
# Definitions


@dataclass(frozen=True)
class DefinitionRow:
    """A stored definition."""

    kind: str
    code: str
    status: str
    body: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


async def _bump_version(conn: Conn, tenant: Tenant) -> None:
    await conn.execute(
        "INSERT INTO definition_versions (project_id, environment, version) VALUES (%s, %s, 1)"
        " ON CONFLICT (project_id, environment)"
        " DO UPDATE SET version = definition_versions.version + 1",
        (tenant.project_id, tenant.environment),
    )


async def create_definition(
    conn: Conn, tenant: Tenant, kind: str, code: str, status: str, body: str
) -> DefinitionRow | None:
    """Insert a definition; None when the code is taken."""
    cursor = await conn.execute(
        "INSERT INTO definitions (project_id, environment, kind, code, status, body)"
        " VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING"
        " RETURNING kind, code, status, body, version, created_at, updated_at",
        (tenant.project_id, tenant.environment, kind, code, status, body),
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    await _bump_version(conn, tenant)
    return DefinitionRow(*row)


async def update_definition(
    conn: Conn, tenant: Tenant, kind: str, code: str, status: str, body: str
) -> DefinitionRow | None:
    """Replace a definition's body; None when it does not exist."""
    cursor = await conn.execute(
        "UPDATE definitions SET status = %s, body = %s::jsonb, version = version + 1,"
        " updated_at = now() WHERE project_id = %s AND environment = %s AND kind = %s"
        " AND code = %s RETURNING kind, code, status, body, version, created_at, updated_at",
        (status, body, tenant.project_id, tenant.environment, kind, code),
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    await _bump_version(conn, tenant)
    return DefinitionRow(*row)


async def get_definition(conn: Conn, tenant: Tenant, kind: str, code: str) -> DefinitionRow | None:
    """One definition by code."""
    cursor = await conn.execute(
        "SELECT kind, code, status, body, version, created_at, updated_at FROM definitions"
        " WHERE project_id = %s AND environment = %s AND kind = %s AND code = %s",
        (tenant.project_id, tenant.environment, kind, code),
    )
    row = await cursor.fetchone()
    return None if row is None else DefinitionRow(*row)


async def list_definitions(
    conn: Conn, tenant: Tenant, kind: str | None = None, *, include_archived: bool = True
) -> list[DefinitionRow]:
    """Definitions of a tenant (of one kind, if given), by code."""
    cursor = await conn.execute(
        "SELECT kind, code, status, body, version, created_at, updated_at FROM definitions"
        " WHERE project_id = %s AND environment = %s AND (%s::text IS NULL OR kind = %s)"
        " AND (%s OR status <> 'archived') ORDER BY kind, code",
        (tenant.project_id, tenant.environment, kind, kind, include_archived),
    )
    return [DefinitionRow(*row) for row in await cursor.fetchall()]


async def definitions_version(conn: Conn, tenant: Tenant) -> int:
    """The tenant's definition version (0 before the first definition)."""
    cursor = await conn.execute(
        "SELECT version FROM definition_versions WHERE project_id = %s AND environment = %s",
        (tenant.project_id, tenant.environment),
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


# ---------------------------------------------------------------------------------------
# Serialising work per participant


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


# ---------------------------------------------------------------------------------------
# Criterion progress


class ProgressDelta(NamedTuple):
    """What a batch adds to one (criterion, participant, bucket).

    A NamedTuple, not a frozen dataclass: thousands are made per batch, and tuples are
    several times cheaper to build.
    """

    criterion_id: str
    participant_id: str
    bucket: str
    facts: int  # how many facts it adds (`count` would shadow tuple.count)
    sum: float
    max: float | None
    reached_at: datetime


async def add_progress(conn: Conn, tenant: Tenant, deltas: Sequence[ProgressDelta]) -> None:
    """Add counts and sums, raise maxima: commutative, so arrival order does not matter."""
    if not deltas:
        return
    rows = sorted(deltas, key=lambda d: (d.criterion_id, d.participant_id, d.bucket))
    await conn.execute(
        """
        INSERT INTO criterion_progress AS c (project_id, environment, criterion_id,
            participant_id, bucket, count, sum, max, reached_at)
        SELECT %s, %s, * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[],
                                     %b::float8[], %b::float8[], %b::timestamptz[])
        ON CONFLICT (project_id, environment, criterion_id, participant_id, bucket) DO UPDATE SET
            count = c.count + EXCLUDED.count,
            sum = c.sum + EXCLUDED.sum,
            max = GREATEST(c.max, EXCLUDED.max),
            reached_at = CASE
                WHEN EXCLUDED.max IS NOT NULL AND c.max IS NOT NULL AND EXCLUDED.max < c.max
                    THEN c.reached_at
                WHEN EXCLUDED.max IS NOT NULL AND EXCLUDED.max = c.max
                    THEN LEAST(c.reached_at, EXCLUDED.reached_at)
                ELSE GREATEST(c.reached_at, EXCLUDED.reached_at) END
        """,
        (
            tenant.project_id,
            tenant.environment,
            [d.criterion_id for d in rows],
            [d.participant_id for d in rows],
            [d.bucket for d in rows],
            [d.facts for d in rows],
            # Binary arrays hold one type: an integer maximum goes as a float too.
            [float(d.sum) for d in rows],
            [None if d.max is None else float(d.max) for d in rows],
            [d.reached_at for d in rows],
        ),
    )


async def add_distinct_values(
    conn: Conn, tenant: Tenant, values: Sequence[tuple[str, str, str, str, datetime]]
) -> None:
    """Record (criterion, participant, bucket, value, at) for distinct-value criteria."""
    if not values:
        return
    # One row per key (the earliest time): ON CONFLICT DO UPDATE may not touch a row twice.
    earliest: dict[tuple[str, str, str, str], datetime] = {}
    for *key, at in values:
        k = (key[0], key[1], key[2], key[3])
        earliest[k] = min(at, earliest.get(k, at))
    rows = sorted((*k, at) for k, at in earliest.items())
    await conn.execute(
        """
        INSERT INTO criterion_distinct AS d (project_id, environment, criterion_id,
            participant_id, bucket, value, first_at)
        SELECT %s, %s, * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[],
                                     %b::timestamptz[])
        ON CONFLICT (project_id, environment, criterion_id, participant_id, bucket, value)
            DO UPDATE SET first_at = LEAST(d.first_at, EXCLUDED.first_at)
        """,
        (tenant.project_id, tenant.environment, *[[r[i] for r in rows] for i in range(5)]),
    )


class BucketValue(NamedTuple):
    """A stored bucket of one criterion for one participant (what judging reads of it).

    A NamedTuple: a batch reads about four per event."""

    facts: int  # how many facts it counts (`count` would shadow tuple.count)
    sum: float
    max: float | None


class BucketRange(NamedTuple):
    """The buckets of one criterion and participant named from `first` to `last`, in byte
    order (the bucket column's collation is "C": migration 0005)."""

    criterion_id: str
    participant_id: str
    first: str
    last: str


def _range_arrays(ranges: Sequence[BucketRange]) -> list[list[str]]:
    return [[r[i] for r in ranges] for i in range(4)]


def _range_read(table: str, columns: str) -> str:
    """SQL reading `columns` of `table` for each of a list of ranges, named by position."""
    return f"""
        SELECT t.n::int4, {columns}
        FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[])
            WITH ORDINALITY AS t(cid, pid, lo, hi, n)
        CROSS JOIN LATERAL (
            SELECT {columns} FROM {table} x
            WHERE x.project_id = %s AND x.environment = %s
              AND x.criterion_id = t.cid AND x.participant_id = t.pid
              AND x.bucket >= t.lo COLLATE "C" AND x.bucket <= t.hi COLLATE "C"
            OFFSET 0
        ) x
        """  # noqa: S608 - fixed table and column names, never input


_READ_PROGRESS = _range_read("criterion_progress", "bucket, count, sum, max")
_READ_DISTINCT = _range_read("criterion_distinct", "bucket, value")


async def read_buckets(
    conn: Conn,
    tenant: Tenant,
    ranges: Sequence[BucketRange],
    distinct_ranges: Sequence[BucketRange] = (),
) -> tuple[dict[tuple[str, str, str], BucketValue], dict[tuple[str, str, str], set[str]]]:
    """Stored buckets in `ranges` and distinct values in `distinct_ranges`, each by
    (criterion, participant, bucket).

    Both queries are sent before either result is read: in pipeline mode that is one
    wait for PostgreSQL instead of two. Rows name their range by its position (instead
    of echoing two strings back) and come in binary: decoding them is most of the cost
    of these reads in Python.
    """
    progress_rows = distinct_rows = None
    if ranges:
        progress_rows = await conn.execute(
            _READ_PROGRESS,
            (*_range_arrays(ranges), tenant.project_id, tenant.environment),
            binary=True,
        )
    if distinct_ranges:
        distinct_rows = await conn.execute(
            _READ_DISTINCT,
            (*_range_arrays(distinct_ranges), tenant.project_id, tenant.environment),
            binary=True,
        )
    progress: dict[tuple[str, str, str], BucketValue] = {}
    if progress_rows is not None:
        for n, bucket, count, total, maximum in await progress_rows.fetchall():
            cid, pid = ranges[n - 1][:2]
            progress[(cid, pid, bucket)] = BucketValue(count, total, maximum)
    distinct: dict[tuple[str, str, str], set[str]] = {}
    if distinct_rows is not None:
        for n, bucket, value in await distinct_rows.fetchall():
            cid, pid = distinct_ranges[n - 1][:2]
            distinct.setdefault((cid, pid, bucket), set()).add(value)
    return progress, distinct


# ---------------------------------------------------------------------------------------
# Points


class LedgerEntry(NamedTuple):
    """One ledger line to write (a NamedTuple: most events earn one)."""

    entry_id: str
    participant_id: str
    amount: int
    kind: str
    source: str
    fact_id: str | None
    cap_bucket: str | None
    occurred_at: datetime
    reason: str = ""
    idempotency_key: str | None = None


async def earned_in_cap_buckets(
    conn: Conn, tenant: Tenant, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], int]:
    """Points already earned per (source, participant, cap bucket)."""
    if not keys:
        return {}
    unique = sorted(set(keys))
    cursor = await conn.execute(
        """
        SELECT t.s, t.pid, t.b, l.total
        FROM unnest(%b::text[], %b::text[], %b::text[]) AS t(s, pid, b)
        CROSS JOIN LATERAL (
            SELECT sum(amount)::bigint AS total FROM points_ledger l
            WHERE l.project_id = %s AND l.environment = %s
              AND l.source = t.s AND l.participant_id = t.pid AND l.cap_bucket = t.b
        ) l
        WHERE l.total IS NOT NULL
        """,
        (
            [k[0] for k in unique],
            [k[1] for k in unique],
            [k[2] for k in unique],
            tenant.project_id,
            tenant.environment,
        ),
    )
    return {(r[0], r[1], r[2]): int(r[3]) for r in await cursor.fetchall()}


async def write_ledger(conn: Conn, tenant: Tenant, entries: Sequence[LedgerEntry]) -> list[str]:
    """Insert entries (once per source and fact); return the ids actually inserted."""
    if not entries:
        return []
    cursor = await conn.execute(
        """
        INSERT INTO points_ledger (project_id, environment, entry_id, participant_id, amount,
            kind, source, fact_id, cap_bucket, occurred_at, reason, idempotency_key)
        SELECT %s, %s, * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[],
            %b::text[], %b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::text[])
        ON CONFLICT DO NOTHING
        RETURNING entry_id
        """,
        (
            tenant.project_id,
            tenant.environment,
            [e.entry_id for e in entries],
            [e.participant_id for e in entries],
            [e.amount for e in entries],
            [e.kind for e in entries],
            [e.source for e in entries],
            [e.fact_id for e in entries],
            [e.cap_bucket for e in entries],
            [e.occurred_at for e in entries],
            [e.reason for e in entries],
            [e.idempotency_key for e in entries],
        ),
    )
    return [row[0] for row in await cursor.fetchall()]


async def apply_balance_changes(
    conn: Conn, tenant: Tenant, changes: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """Add (earned, spent) per participant; return each one's new (balance, total_earned).

    The balance CHECK (>= 0) makes an overdraft fail the statement; callers that spend
    check first under the participant lock.
    """
    if not changes:
        return {}
    participants = sorted(changes)
    cursor = await conn.execute(
        """
        INSERT INTO points_balances AS b (project_id, environment, participant_id, balance,
            total_earned, total_spent)
        SELECT %s, %s, pid, GREATEST(earned - spent, 0), earned, spent
        FROM unnest(%b::text[], %b::bigint[], %b::bigint[]) AS t(pid, earned, spent)
        ON CONFLICT (project_id, environment, participant_id) DO UPDATE SET
            -- From the totals, not EXCLUDED.balance: the proposed row is clamped at 0
            -- because PostgreSQL checks the CHECK on it before it finds the conflict.
            balance = b.balance + EXCLUDED.total_earned - EXCLUDED.total_spent,
            total_earned = b.total_earned + EXCLUDED.total_earned,
            total_spent = b.total_spent + EXCLUDED.total_spent,
            updated_at = now()
        RETURNING participant_id, balance, total_earned
        """,
        (
            tenant.project_id,
            tenant.environment,
            participants,
            [changes[p][0] for p in participants],
            [changes[p][1] for p in participants],
        ),
    )
    return {r[0]: (int(r[1]), int(r[2])) for r in await cursor.fetchall()}


async def read_balance(conn: Conn, tenant: Tenant, participant_id: str) -> tuple[int, int, int]:
    """(balance, total_earned, total_spent) of a participant (zeros when none)."""
    cursor = await conn.execute(
        "SELECT balance, total_earned, total_spent FROM points_balances"
        " WHERE project_id = %s AND environment = %s AND participant_id = %s",
        (tenant.project_id, tenant.environment, participant_id),
    )
    row = await cursor.fetchone()
    return (0, 0, 0) if row is None else (int(row[0]), int(row[1]), int(row[2]))


class ManualEntry(NamedTuple):
    """A manual ledger entry, as an idempotency key finds it."""

    entry_id: str
    participant_id: str
    amount: int
    reason: str


async def find_manual_entry(conn: Conn, tenant: Tenant, idempotency_key: str) -> ManualEntry | None:
    """A manual ledger entry by its idempotency key."""
    cursor = await conn.execute(
        "SELECT entry_id, participant_id, amount, reason FROM points_ledger"
        " WHERE project_id = %s AND environment = %s AND idempotency_key = %s",
        (tenant.project_id, tenant.environment, idempotency_key),
    )
    row = await cursor.fetchone()
    return None if row is None else ManualEntry(row[0], row[1], int(row[2]), row[3])


async def list_ledger(
    conn: Conn, tenant: Tenant, participant_id: str, *, after: str | None, limit: int
) -> list[tuple[Any, ...]]:
    """A participant's ledger, newest first, after a cursor (an entry id)."""
    cursor = await conn.execute(
        "SELECT entry_id, amount, kind, source, fact_id, reason, occurred_at, created_at"
        " FROM points_ledger WHERE project_id = %s AND environment = %s AND participant_id = %s"
        " AND (%s::text IS NULL OR entry_id < %s) ORDER BY entry_id DESC LIMIT %s",
        (tenant.project_id, tenant.environment, participant_id, after, after, limit),
    )
    return list(await cursor.fetchall())


# ---------------------------------------------------------------------------------------
# Badges and challenges


async def award_badges(
    conn: Conn, tenant: Tenant, awards: Sequence[tuple[str, str, str, str, str | None]]
) -> list[tuple[str, str, str]]:
    """Insert (badge, participant, award_key, source, fact_id); return those newly awarded."""
    if not awards:
        return []
    rows = sorted(set(awards), key=lambda a: a[:3])
    cursor = await conn.execute(
        """
        INSERT INTO badge_awards (project_id, environment, badge_code, participant_id,
            award_key, source, fact_id)
        SELECT %s, %s, * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[])
        ON CONFLICT DO NOTHING
        RETURNING badge_code, participant_id, award_key
        """,
        (tenant.project_id, tenant.environment, *[[r[i] for r in rows] for i in range(5)]),
    )
    return [(r[0], r[1], r[2]) for r in await cursor.fetchall()]


async def list_badge_awards(
    conn: Conn, tenant: Tenant, participant_id: str
) -> list[tuple[Any, ...]]:
    """(badge, award_key, source, awarded_at) of a participant."""
    cursor = await conn.execute(
        "SELECT badge_code, award_key, source, awarded_at FROM badge_awards"
        " WHERE project_id = %s AND environment = %s AND participant_id = %s"
        " ORDER BY awarded_at, badge_code",
        (tenant.project_id, tenant.environment, participant_id),
    )
    return list(await cursor.fetchall())


async def complete_challenges(
    conn: Conn, tenant: Tenant, completions: Sequence[tuple[str, str, str | None]]
) -> list[tuple[str, str]]:
    """Insert (challenge, participant, fact_id); return those newly completed."""
    if not completions:
        return []
    rows = sorted(set(completions), key=lambda c: c[:2])
    cursor = await conn.execute(
        """
        INSERT INTO challenge_completions (project_id, environment, challenge_code,
            participant_id, fact_id)
        SELECT %s, %s, * FROM unnest(%b::text[], %b::text[], %b::text[])
        ON CONFLICT DO NOTHING
        RETURNING challenge_code, participant_id
        """,
        (tenant.project_id, tenant.environment, *[[r[i] for r in rows] for i in range(3)]),
    )
    return [(r[0], r[1]) for r in await cursor.fetchall()]


async def list_completions(conn: Conn, tenant: Tenant, participant_id: str) -> dict[str, datetime]:
    """Completed challenges of a participant and when."""
    cursor = await conn.execute(
        "SELECT challenge_code, completed_at FROM challenge_completions"
        " WHERE project_id = %s AND environment = %s AND participant_id = %s",
        (tenant.project_id, tenant.environment, participant_id),
    )
    return {r[0]: r[1] for r in await cursor.fetchall()}


# ---------------------------------------------------------------------------------------
# Streaks


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


async def participant_timezones(
    conn: Conn, tenant: Tenant, participant_ids: Sequence[str]
) -> dict[str, str]:
    """The `timezone` attribute of participants that have one."""
    cursor = await conn.execute(
        "SELECT participant_id, attributes->>'timezone' FROM participants"
        " WHERE project_id = %s AND environment = %s AND participant_id = ANY(%s)"
        " AND attributes ? 'timezone'",
        (tenant.project_id, tenant.environment, list(participant_ids)),
    )
    return {r[0]: r[1] for r in await cursor.fetchall()}


# ---------------------------------------------------------------------------------------
# Leaderboards


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
