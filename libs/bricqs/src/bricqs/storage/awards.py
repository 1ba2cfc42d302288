"""Badge awards and challenge completions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bricqs.storage.arrays import text_array
from bricqs.storage.tenants import Conn, Tenant


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
        (
            tenant.project_id,
            tenant.environment,
            *[text_array([r[i] for r in rows]) for i in range(5)],
        ),
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
    conn: Conn,
    tenant: Tenant,
    completions: Sequence[tuple[str, str, str | None]],
    source: str = "criteria",
) -> list[tuple[str, str]]:
    """Insert (challenge, participant, fact_id); return those newly completed."""
    if not completions:
        return []
    rows = sorted(set(completions), key=lambda c: c[:2])
    cursor = await conn.execute(
        """
        INSERT INTO challenge_completions (project_id, environment, challenge_code,
            participant_id, fact_id, source)
        SELECT %s, %s, c.*, %s FROM unnest(%b::text[], %b::text[], %b::text[]) AS c
        ON CONFLICT DO NOTHING
        RETURNING challenge_code, participant_id
        """,
        (
            tenant.project_id,
            tenant.environment,
            source,
            *[text_array([r[i] for r in rows]) for i in range(3)],
        ),
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


async def awards_held(
    conn: Conn, tenant: Tenant, badge_code: str, participant_ids: Sequence[str]
) -> set[tuple[str, str]]:
    """(participant, award_key) of the awards of one badge that `participant_ids` hold."""
    cursor = await conn.execute(
        "SELECT participant_id, award_key FROM badge_awards"
        " WHERE project_id = %s AND environment = %s AND badge_code = %s"
        " AND participant_id = ANY(%s)",
        (tenant.project_id, tenant.environment, badge_code, list(participant_ids)),
    )
    return {(r[0], r[1]) for r in await cursor.fetchall()}


async def completed_by(
    conn: Conn, tenant: Tenant, challenge_code: str, participant_ids: Sequence[str]
) -> set[str]:
    """Those of `participant_ids` who completed the challenge."""
    cursor = await conn.execute(
        "SELECT participant_id FROM challenge_completions"
        " WHERE project_id = %s AND environment = %s AND challenge_code = %s"
        " AND participant_id = ANY(%s)",
        (tenant.project_id, tenant.environment, challenge_code, list(participant_ids)),
    )
    return {r[0] for r in await cursor.fetchall()}
