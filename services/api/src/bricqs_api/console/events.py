"""Events: the catalog of what the tenant has sent; a name opens its most recent facts."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import PathParameter

from bricqs.storage.catalog import read_catalog
from bricqs.storage.stats import recent_events
from bricqs.storage.tenants import Conn
from bricqs_api.console.rendering import page
from bricqs_api.console.session import SignedIn

RECENT = 50
RECENT_WINDOW = timedelta(days=1)
"""How far before the name was last seen its events are looked for (a bound on the walk)."""
EventName = Annotated[str, PathParameter(pattern=r"^[^\x00-\x1f\x7f]{1,255}$")]


class EventPages(Controller):
    """The event catalog and one event's recent facts."""

    path = "/events"
    include_in_schema = False

    @get("/")
    async def catalog(
        self, request: Request[Any, Any, Any], user: SignedIn, conn: NamedDependency[Conn]
    ) -> Response[str]:
        """Names, counts, first and last seen, and the property types seen."""
        entries = await read_catalog(conn, user.tenant)
        return page(request, "events.html", user=user, entries=entries)

    @get("/{event_name:str}")
    async def event(
        self,
        request: Request[Any, Any, Any],
        event_name: EventName,
        user: SignedIn,
        conn: NamedDependency[Conn],
    ) -> Response[str]:
        """The event's most recent occurrences, with their properties."""
        seen = [e for e in await read_catalog(conn, user.tenant) if e.event_name == event_name]
        events = (
            await recent_events(
                conn, user.tenant, event_name, seen[0].last_seen_at - RECENT_WINDOW, RECENT
            )
            if seen
            else []
        )
        return page(request, "event.html", user=user, event_name=event_name, events=events)
