"""The event catalog: /api/v1/events/catalog."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.di import NamedDependency

from bricqs.storage.catalog import read_catalog
from bricqs.storage.tenants import Conn, Tenant
from bricqs.web.auth import requires
from bricqs_api.context import PROBLEMS, READS


class CatalogController(Controller):
    """What the tenant has sent, as seen by the processor."""

    path = "/events/catalog"
    tags = ("catalog",)
    security = requires("read")
    dependencies = READS

    @get("/", responses=PROBLEMS)
    async def event_catalog(
        self, conn: NamedDependency[Conn], tenant: NamedDependency[Tenant]
    ) -> dict[str, Any]:
        """Every event name seen, with counts and the JSON types seen for each property."""
        return {
            "items": [
                {
                    "event_name": entry.event_name,
                    "count": entry.event_count,
                    "first_seen_at": entry.first_seen_at,
                    "last_seen_at": entry.last_seen_at,
                    "properties": entry.properties,
                }
                for entry in await read_catalog(conn, tenant)
            ]
        }
