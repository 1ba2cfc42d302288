"""Participants' attributes (their counters are kept by storing events: see events.py)."""

from __future__ import annotations

from collections.abc import Sequence

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
