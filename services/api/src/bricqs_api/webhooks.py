"""Webhook endpoints: /api/v1/gamify/admin/webhooks (SPEC §11), and their delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter
from msgspec import Meta

from bricqs.storage.tenants import Conn, Tenant
from bricqs.storage.webhook_outbox import enqueue_test_message
from bricqs.storage.webhooks import (
    ALL_TYPES,
    EVENT_TYPES,
    Endpoint,
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    list_deliveries,
    list_endpoints,
    replay_messages,
    retry_message,
    rotate_secret,
    update_endpoint,
)
from bricqs.validation import FieldError
from bricqs.web.auth import requires
from bricqs.web.problems import ProblemError
from bricqs.webhook_secrets import secret_box
from bricqs.webhook_targets import UnsafeTarget, resolve_target
from bricqs_api.context import PROBLEMS, ApiClients, Page

EndpointPath = Annotated[str, PathParameter(pattern=r"^whe_[0-9A-Z]{26}$")]
MessagePath = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9_]{1,64}$")]
Url = Annotated[str, Meta(min_length=8, max_length=2048)]
EventTypes = Annotated[list[str], Meta(min_length=1, max_length=20)]
Description = Annotated[str, Meta(max_length=500)]
FinishedStatuses = Annotated[list[Literal["delivered", "failed"]], Meta(min_length=1)]


class EndpointRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new endpoint."""

    url: Url
    event_types: EventTypes
    description: Description = ""
    enabled: bool = True


class EndpointChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields of an endpoint to change; those left out keep their value."""

    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    enabled: bool | None = None


class SecretRotation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How long the old secret keeps signing next to the new one."""

    overlap_seconds: Annotated[int, Meta(ge=0, le=7 * 86_400)] = 86_400


class Replay(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which finished messages to send again: created in [since, until), with a status."""

    since: datetime
    until: datetime
    statuses: FinishedStatuses = msgspec.field(default_factory=lambda: ["failed"])


def _invalid(field: str, message: str, code: str) -> ProblemError:
    return ProblemError(
        422,
        "validation_failed",
        "The request is invalid.",
        errors=[FieldError(field, message, code)],
    )


async def _checked(
    clients: ApiClients, url: str | None, event_types: list[str] | None
) -> dict[str, Any]:
    """The given fields, once the URL is a safe target and every event type is known."""
    checked: dict[str, Any] = {}
    if url is not None:
        try:
            await resolve_target(url, allow_private=clients.settings.webhooks_allow_private)
        except UnsafeTarget as exc:
            raise _invalid("url", str(exc), "unsafe_url") from exc
        checked["url"] = url
    if event_types is not None:
        unknown = sorted(set(event_types) - EVENT_TYPES - {ALL_TYPES})
        if unknown:
            raise _invalid("event_types", f"unknown event types: {unknown}", "unknown_value")
        checked["event_types"] = sorted(set(event_types))
    return checked


def _body(endpoint: Endpoint) -> dict[str, Any]:
    return endpoint._asdict()


def _found(endpoint: Endpoint | None, endpoint_id: str) -> Endpoint:
    if endpoint is None:
        raise ProblemError(404, "webhook_not_found", f"No webhook endpoint {endpoint_id!r}.")
    return endpoint


class WebhookController(Controller):
    """The tenant's webhook endpoints."""

    path = "/admin/webhooks"
    tags = ("webhooks",)
    security = requires("admin")

    @post("/", responses=PROBLEMS, status_code=201, summary="Create a webhook endpoint")
    async def create(
        self,
        data: JSONBody[EndpointRequest],
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
        clients: NamedDependency[ApiClients],
    ) -> dict[str, Any]:
        """The endpoint and its signing secret, which is shown this once."""
        fields = await _checked(clients, data.url, data.event_types)
        endpoint, secret = await create_endpoint(
            conn,
            tenant,
            url=fields["url"],
            event_types=fields["event_types"],
            description=data.description,
            enabled=data.enabled,
            box=secret_box(clients.settings.webhook_secrets_keys),
        )
        return {**_body(endpoint), "secret": secret}

    @get("/", responses=PROBLEMS, summary="List webhook endpoints")
    async def list_all(
        self, conn: NamedDependency[Conn], tenant: NamedDependency[Tenant]
    ) -> dict[str, Any]:
        """Every endpoint of the tenant (without secrets)."""
        return {"items": [_body(e) for e in await list_endpoints(conn, tenant)]}

    @get("/{endpoint_id:str}", responses=PROBLEMS, summary="Get a webhook endpoint")
    async def get_one(
        self,
        endpoint_id: EndpointPath,
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
    ) -> dict[str, Any]:
        """One endpoint (without its secret)."""
        return _body(_found(await get_endpoint(conn, tenant, endpoint_id), endpoint_id))

    @patch("/{endpoint_id:str}", responses=PROBLEMS, summary="Change a webhook endpoint")
    async def change(
        self,
        endpoint_id: EndpointPath,
        data: JSONBody[EndpointChange],
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
        clients: NamedDependency[ApiClients],
    ) -> dict[str, Any]:
        """Change the URL, event types, description or enabled state."""
        changes = await _checked(clients, data.url, data.event_types)
        if data.description is not None:
            changes["description"] = data.description
        if data.enabled is not None:
            changes["enabled"] = data.enabled
        endpoint = await update_endpoint(conn, tenant, endpoint_id, changes)
        return _body(_found(endpoint, endpoint_id))

    @delete("/{endpoint_id:str}", responses=PROBLEMS, status_code=204, summary="Delete one")
    async def remove(
        self,
        endpoint_id: EndpointPath,
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
    ) -> None:
        """Delete the endpoint and its undelivered messages."""
        if not await delete_endpoint(conn, tenant, endpoint_id):
            _found(None, endpoint_id)

    @post(
        "/{endpoint_id:str}/rotate-secret",
        responses=PROBLEMS,
        status_code=200,
        summary="Rotate the signing secret",
    )
    async def rotate(
        self,
        endpoint_id: EndpointPath,
        data: JSONBody[SecretRotation],
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
        clients: NamedDependency[ApiClients],
    ) -> dict[str, Any]:
        """A new secret, shown this once; the old one signs too until the overlap ends."""
        box = secret_box(clients.settings.webhook_secrets_keys)
        rotated = await rotate_secret(conn, tenant, endpoint_id, data.overlap_seconds, box)
        if rotated is None:
            _found(None, endpoint_id)
        assert rotated is not None
        endpoint, secret = rotated
        return {**_body(endpoint), "secret": secret}

    @get("/{endpoint_id:str}/deliveries", responses=PROBLEMS, summary="The delivery log")
    async def deliveries(
        self,
        endpoint_id: EndpointPath,
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
        page: Page,
    ) -> dict[str, Any]:
        """The endpoint's messages, newest first: status, attempts, last HTTP status and
        latency, next attempt."""
        _found(await get_endpoint(conn, tenant, endpoint_id), endpoint_id)
        rows = await list_deliveries(
            conn, tenant, endpoint_id, after=page.after, limit=page.limit + 1
        )
        return page.answer(rows, "message_id")

    @post(
        "/{endpoint_id:str}/deliveries/{message_id:str}/retry",
        responses=PROBLEMS,
        status_code=202,
        summary="Deliver a message again",
    )
    async def retry(
        self,
        endpoint_id: EndpointPath,
        message_id: MessagePath,
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
    ) -> dict[str, Any]:
        """Make a delivered or failed message due now (a pending one is due anyway)."""
        if not await retry_message(conn, tenant, endpoint_id, message_id):
            raise ProblemError(
                404, "message_not_found", f"No finished message {message_id!r} on this endpoint."
            )
        return {"message_id": message_id, "status": "pending"}

    @post(
        "/{endpoint_id:str}/replay",
        responses=PROBLEMS,
        status_code=202,
        summary="Deliver again the messages of a time range",
    )
    async def replay(
        self,
        endpoint_id: EndpointPath,
        data: JSONBody[Replay],
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
    ) -> dict[str, Any]:
        """Make due now every failed (or delivered, if asked) message created in the range."""
        _found(await get_endpoint(conn, tenant, endpoint_id), endpoint_id)
        if data.until <= data.since:
            raise _invalid("until", "must be after since", "invalid_range")
        count = await replay_messages(
            conn, tenant, endpoint_id, since=data.since, until=data.until, statuses=data.statuses
        )
        return {"replayed": count}

    @post("/{endpoint_id:str}/test", responses=PROBLEMS, status_code=202, summary="Send a test")
    async def send_test(
        self,
        endpoint_id: EndpointPath,
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
    ) -> dict[str, Any]:
        """Owe the endpoint a signed `webhook.test` message, sent like any other."""
        message_id = await enqueue_test_message(conn, tenant, endpoint_id)
        if message_id is None:
            _found(None, endpoint_id)
        return {"message_id": message_id, "status": "pending"}
