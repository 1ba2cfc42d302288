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
    """Merge `attributes` (a JSON object; a null removes that attribute) into a
    participant's, creating the participant if unseen; return all its attributes."""
    cursor = await conn.execute(
        "INSERT INTO participants AS p (project_id, environment, participant_id,"
        " first_seen_at, last_seen_at, event_count, attributes)"
        " VALUES (%s, %s, %s, now(), now(), 0, jsonb_strip_nulls(%s::jsonb))"
        " ON CONFLICT (project_id, environment, participant_id)"
        " DO UPDATE SET attributes = jsonb_strip_nulls(p.attributes || %s::jsonb)"
        " RETURNING attributes",
        (tenant.project_id, tenant.environment, participant_id, attributes, attributes),
    )
    row = await cursor.fetchone()
    assert row is not None
    return dict(row[0])


async def participant_groups(
    conn: Conn, tenant: Tenant, attribute: str, participant_ids: Sequence[str]
) -> dict[str, str]:
    """The value of `attribute`, as text, of the participants that have one."""
    if not participant_ids:
        return {}
    cursor = await conn.execute(
        "SELECT participant_id, attributes->>%s FROM participants"
        " WHERE project_id = %s AND environment = %s AND participant_id = ANY(%s)"
        " AND attributes ? %s",
        (attribute, tenant.project_id, tenant.environment, list(participant_ids), attribute),
    )
    return {r[0]: r[1] for r in await cursor.fetchall() if r[1] is not None}


async def attributes_of(
    conn: Conn, tenant: Tenant, participant_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The attributes of each of these participants that is known ({} when it has none)."""
    cursor = await conn.execute(
        "SELECT participant_id, attributes FROM participants"
        " WHERE project_id = %s AND environment = %s AND participant_id = ANY(%s)",
        (tenant.project_id, tenant.environment, list(participant_ids)),
    )
    return {r[0]: dict(r[1]) for r in await cursor.fetchall()}


async def participants_after(
    conn: Conn, tenant: Tenant, after: str | None, limit: int
) -> list[str]:
    """Up to `limit` participant ids after `after` (None: from the first), in id order:
    the walk of a job over every participant (backfill)."""
    cursor = await conn.execute(
        "SELECT participant_id FROM participants"
        " WHERE project_id = %s AND environment = %s AND (%s::text IS NULL OR participant_id > %s)"
        " ORDER BY participant_id LIMIT %s",
        (tenant.project_id, tenant.environment, after, after, limit),
    )
    return [r[0] for r in await cursor.fetchall()]


async def count_participants(conn: Conn, tenant: Tenant) -> int:
    """How many participants the tenant has."""
    cursor = await conn.execute(
        "SELECT count(*) FROM participants WHERE project_id = %s AND environment = %s",
        (tenant.project_id, tenant.environment),
    )
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])
