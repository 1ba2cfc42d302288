"""Participants' attributes (their counters are kept by storing events: see events.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bricqs.storage.tenants import Conn, Tenant


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


async def merge_attributes(
    conn: Conn, tenant: Tenant, participant_id: str, attributes: str
) -> dict[str, Any]:
    """Merge `attributes` (a JSON object) into a participant's, creating the participant
    if unseen; return all its attributes."""
    cursor = await conn.execute(
        "INSERT INTO participants AS p (project_id, environment, participant_id,"
        " first_seen_at, last_seen_at, event_count, attributes)"
        " VALUES (%s, %s, %s, now(), now(), 0, %s::jsonb)"
        " ON CONFLICT (project_id, environment, participant_id)"
        " DO UPDATE SET attributes = p.attributes || EXCLUDED.attributes"
        " RETURNING attributes",
        (tenant.project_id, tenant.environment, participant_id, attributes),
    )
    row = await cursor.fetchone()
    assert row is not None
    return dict(row[0])
