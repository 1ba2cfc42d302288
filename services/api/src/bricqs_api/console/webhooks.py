"""Webhooks: the tenant's endpoints, each one's deliveries (cursor-paged), and a retry of
one delivery, through the storage reads and writes the webhooks api uses. Endpoints are
admin business in the api, so they are here too."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter, QueryParameter
from litestar.response import Redirect

from bricqs.storage.tenants import Conn
from bricqs.storage.webhooks import get_endpoint, list_deliveries, list_endpoints, retry_message
from bricqs_api.console.rendering import page
from bricqs_api.console.session import SignedIn, require
from bricqs_api.console.signin import Form
from bricqs_api.context import Cursor

DELIVERIES_PAGE = 50
EndpointId = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9_]{1,64}$")]


class WebhookPages(Controller):
    """Endpoints, deliveries and retries."""

    path = "/webhooks"
    include_in_schema = False

    @get("/")
    async def endpoints(
        self, request: Request[Any, Any, Any], user: SignedIn, conn: NamedDependency[Conn]
    ) -> Response[str]:
        """Every endpoint of the tenant."""
        require(user, "admin")
        endpoints = await list_endpoints(conn, user.tenant)
        return page(request, "webhooks.html", user=user, endpoints=endpoints)

    @get("/{endpoint_id:str}")
    async def deliveries(
        self,
        request: Request[Any, Any, Any],
        endpoint_id: EndpointId,
        user: SignedIn,
        conn: NamedDependency[Conn],
        cursor: Cursor = None,
        retried: Annotated[int | None, QueryParameter(ge=0, le=1)] = None,
    ) -> Response[str]:
        """One endpoint and its deliveries, newest first."""
        require(user, "admin")
        endpoint = await get_endpoint(conn, user.tenant, endpoint_id)
        if endpoint is None:
            raise NotFoundException(f"No webhook endpoint {endpoint_id!r}.")
        rows = await list_deliveries(
            conn, user.tenant, endpoint_id, after=cursor, limit=DELIVERIES_PAGE + 1
        )
        more = len(rows) > DELIVERIES_PAGE
        return page(
            request,
            "webhook.html",
            user=user,
            endpoint=endpoint,
            deliveries=rows[:DELIVERIES_PAGE],
            cursor=cursor,
            next_cursor=rows[DELIVERIES_PAGE - 1].message_id if more else None,
            retried=retried,
        )

    @post("/{endpoint_id:str}/retry", status_code=303)
    async def retry(
        self,
        endpoint_id: EndpointId,
        data: Annotated[dict[str, str], Form],
        user: SignedIn,
        conn: NamedDependency[Conn],
    ) -> Response[Any]:
        """Make a delivered or failed message due again now."""
        require(user, "admin")
        retried = await retry_message(conn, user.tenant, endpoint_id, data.get("message_id", ""))
        return Redirect(f"/console/webhooks/{endpoint_id}?retried={int(retried)}", status_code=303)
