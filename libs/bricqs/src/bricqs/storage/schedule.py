"""What the scheduler finds due beyond streak deadlines (see storage/streaks.py):
challenge windows that closed, boards whose runs end by the clock, and which of its
facts are stored already."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from bricqs.schemas import Fact
from bricqs.storage.tenants import Conn, Tenant


class ChallengeExpiry(NamedTuple):
    """A closed challenge window, and the last participant already told."""

    tenant: Tenant
    challenge_code: str
    ends_at: datetime
    after: str


async def stored_fact_ids(conn: Conn, tenant: Tenant, facts: Sequence[Fact]) -> set[str]:
    """Which of `facts` the tenant's facts hold, by id (scheduled facts have fixed ids);
    looked up with their participants, which lead the facts' primary key."""
    if not facts:
        return set()
    cursor = await conn.execute(
        "SELECT f.fact_id FROM unnest(%b::text[], %b::text[]) AS t(pid, id)"
        " JOIN facts f ON f.project_id = %s AND f.environment = %s"
        " AND f.participant_id = t.pid AND f.fact_id = t.id",
        (
            [f.participant_id for f in facts],
            [f.fact_id for f in facts],
            tenant.project_id,
            tenant.environment,
        ),
    )
    return {r[0] for r in await cursor.fetchall()}


async def tenants_with_repeating_boards(conn: Conn) -> list[Tenant]:
    """Tenants with an active daily, weekly or monthly leaderboard."""
    cursor = await conn.execute(
        "SELECT DISTINCT project_id, environment FROM definitions"
        " WHERE kind = 'leaderboard' AND status = 'active'"
        " AND coalesce(body->>'period', 'all_time') <> 'all_time'"
        " ORDER BY project_id, environment"
    )
    return [Tenant(r[0], r[1]) for r in await cursor.fetchall()]


async def claim_challenge_expiry(conn: Conn, now: datetime) -> ChallengeExpiry | None:
    """Note every active challenge whose fixed window closed by `now`, then lock one not
    done yet that no other transaction holds (None when there is none)."""
    await conn.execute(
        "INSERT INTO challenge_expiries (project_id, environment, challenge_code, ends_at)"
        " SELECT project_id, environment, code, (body->'window'->>'end')::timestamptz"
        " FROM definitions WHERE kind = 'challenge' AND status = 'active'"
        " AND body->'window'->>'type' = 'fixed' AND body->'window'->>'end' IS NOT NULL"
        " AND (body->'window'->>'end')::timestamptz <= %s"
        " ON CONFLICT DO NOTHING",
        (now,),
    )
    cursor = await conn.execute(
        "SELECT project_id, environment, challenge_code, ends_at, after"
        " FROM challenge_expiries WHERE NOT done ORDER BY ends_at LIMIT 1"
        " FOR UPDATE SKIP LOCKED"
    )
    row = await cursor.fetchone()
    return None if row is None else ChallengeExpiry(Tenant(row[0], row[1]), *row[2:])


async def participants_to_expire(
    conn: Conn, expiry: ChallengeExpiry, criterion_ids: Sequence[str], limit: int
) -> list[str]:
    """The next `limit` participants after `expiry.after` with progress on the
    challenge's criteria who did not complete it, in id order."""
    t = expiry.tenant
    cursor = await conn.execute(
        "SELECT DISTINCT p.participant_id FROM criterion_progress p"
        " WHERE p.project_id = %s AND p.environment = %s AND p.criterion_id = ANY(%b::text[])"
        " AND p.participant_id > %s AND NOT EXISTS (SELECT 1 FROM challenge_completions c"
        "   WHERE c.project_id = p.project_id AND c.environment = p.environment"
        "   AND c.challenge_code = %s AND c.participant_id = p.participant_id)"
        " ORDER BY p.participant_id LIMIT %s",
        (
            t.project_id,
            t.environment,
            list(criterion_ids),
            expiry.after,
            expiry.challenge_code,
            limit,
        ),
    )
    return [r[0] for r in await cursor.fetchall()]


async def advance_challenge_expiry(
    conn: Conn, expiry: ChallengeExpiry, after: str, done: bool
) -> None:
    """Record the last participant told, and whether every one has been."""
    await conn.execute(
        "UPDATE challenge_expiries SET after = %s, done = %s WHERE project_id = %s"
        " AND environment = %s AND challenge_code = %s AND ends_at = %s",
        (
            after,
            done,
            expiry.tenant.project_id,
            expiry.tenant.environment,
            expiry.challenge_code,
            expiry.ends_at,
        ),
    )
