"""Counts over a tenant's facts for the console's overview and event pages.

Every read walks the (project, environment, fact_type, occurred_at) index: one range per
fact type, so a page costs what the window holds, not what the tenant ever stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bricqs.storage.facts import FactRow
from bricqs.storage.tenants import Conn, Tenant


async def fact_types(conn: Conn, tenant: Tenant) -> list[str]:
    """Every fact type the tenant has, by name (a skip scan: one index probe per type)."""
    cursor = await conn.execute(
        "WITH RECURSIVE types AS ("
        " (SELECT fact_type FROM facts WHERE project_id = %(p)s AND environment = %(e)s"
        "  ORDER BY fact_type LIMIT 1)"
        " UNION ALL"
        " SELECT (SELECT f.fact_type FROM facts f WHERE f.project_id = %(p)s"
        "  AND f.environment = %(e)s AND f.fact_type > types.fact_type"
        "  ORDER BY f.fact_type LIMIT 1) FROM types WHERE types.fact_type IS NOT NULL)"
        " SELECT fact_type FROM types WHERE fact_type IS NOT NULL",
        {"p": tenant.project_id, "e": tenant.environment},
    )
    return [row[0] for row in await cursor.fetchall()]


async def counts_since(
    conn: Conn, tenant: Tenant, types: Sequence[str], since: datetime
) -> dict[str, int]:
    """How many facts of each of `types` occurred at or after `since` (types with none
    are left out)."""
    cursor = await conn.execute(
        "SELECT t, (SELECT count(*) FROM facts f WHERE f.project_id = %s AND f.environment = %s"
        " AND f.fact_type = t AND f.occurred_at >= %s) FROM unnest(%s::text[]) AS t",
        (tenant.project_id, tenant.environment, since, list(types)),
    )
    return {fact_type: count for fact_type, count in await cursor.fetchall() if count}


async def hourly_counts(
    conn: Conn, tenant: Tenant, types: Sequence[str], since: datetime, until: datetime
) -> dict[datetime, int]:
    """Facts of `types` per hour (UTC) in [since, until); empty hours are left out."""
    cursor = await conn.execute(
        "SELECT date_trunc('hour', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', count(*)"
        " FROM facts WHERE project_id = %s AND environment = %s AND fact_type = ANY(%s)"
        " AND occurred_at >= %s AND occurred_at < %s GROUP BY 1",
        (tenant.project_id, tenant.environment, list(types), since, until),
    )
    return {hour: count for hour, count in await cursor.fetchall()}


async def recent_facts_of_type(
    conn: Conn, tenant: Tenant, fact_type: str, limit: int
) -> list[tuple[str, FactRow]]:
    """The newest facts of one type, with their participant, newest first."""
    cursor = await conn.execute(
        "SELECT participant_id, fact_id, fact_type, event_id, properties, occurred_at,"
        " created_at FROM facts WHERE project_id = %s AND environment = %s AND fact_type = %s"
        " ORDER BY occurred_at DESC LIMIT %s",
        (tenant.project_id, tenant.environment, fact_type, limit),
    )
    return [(row[0], FactRow(*row[1:])) for row in await cursor.fetchall()]
