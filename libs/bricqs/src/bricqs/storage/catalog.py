"""Reading the event catalog (it is counted as events are stored: see events.py)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from bricqs.storage.tenants import Conn, Tenant


class CatalogEntry(NamedTuple):
    """An event name seen, with its count and the JSON types seen for each property."""

    event_name: str
    event_count: int
    first_seen_at: datetime
    last_seen_at: datetime
    properties: dict[str, list[str]]


async def read_catalog(conn: Conn, tenant: Tenant) -> list[CatalogEntry]:
    """Every event name of the tenant, by name."""
    events = await conn.execute(
        "SELECT event_name, event_count, first_seen_at, last_seen_at FROM event_catalog"
        " WHERE project_id = %s AND environment = %s ORDER BY event_name",
        (tenant.project_id, tenant.environment),
    )
    names = await events.fetchall()
    properties = await conn.execute(
        "SELECT event_name, property_key, array_agg(json_type ORDER BY json_type)"
        " FROM event_catalog_properties WHERE project_id = %s AND environment = %s"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        (tenant.project_id, tenant.environment),
    )
    by_event: dict[str, dict[str, list[str]]] = {}
    for name, key, types in await properties.fetchall():
        by_event.setdefault(name, {})[key] = list(types)
    return [
        CatalogEntry(name, count, first, last, by_event.get(name, {}))
        for name, count, first, last in names
    ]
