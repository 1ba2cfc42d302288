"""The console's webhooks page: the tenant's endpoints (admin keys only), an endpoint's
deliveries, and a retry of a failed one."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from litestar.testing import TestClient

from bricqs.storage.tenants import Tenant as StorageTenant
from bricqs.storage.webhook_outbox import enqueue_test_message
from bricqs.storage.webhooks import create_endpoint
from bricqs.webhook_secrets import SecretBox
from tests.conftest import Tenant, make_tenant
from tests.console.conftest import form_token, set_key
from tests.console.test_console_security import sign_in


def _endpoint_with_a_failed_message(database_url: str, project_id: str) -> tuple[str, str]:
    async def create() -> tuple[str, str]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            tenant = StorageTenant(project_id, "live")
            endpoint, _ = await create_endpoint(
                conn,
                tenant,
                url="https://hooks.example/bricqs",
                event_types=["*"],
                description="crm",
                enabled=True,
                box=SecretBox(""),  # the console's api runs with no secrets key either
            )
            message_id = await enqueue_test_message(conn, tenant, endpoint.endpoint_id)
            assert message_id is not None
            await conn.execute(
                "UPDATE webhook_messages SET status = 'failed', attempts = 12,"
                " last_status = 500, finished_at = now() WHERE fact_id = %s",
                (message_id,),
            )
        return endpoint.endpoint_id, message_id

    return asyncio.run(create())


def test_an_admin_sees_endpoints_and_deliveries_and_retries_a_failed_one(
    console_client: TestClient[Any], tenant: Tenant, postgres_server: Any
) -> None:
    endpoint_id, message_id = _endpoint_with_a_failed_message(
        postgres_server.url, tenant.project_id
    )
    other = make_tenant(postgres_server.url, "other")
    _endpoint_with_a_failed_message(postgres_server.url, other.project_id)
    sign_in(console_client, tenant.live_key)
    listing = console_client.get("/console/webhooks").text
    assert listing.count('href="/console/webhooks/whe_') == 1 and endpoint_id in listing
    page = console_client.get(f"/console/webhooks/{endpoint_id}").text
    assert "failed" in page and "HTTP 500" in page and message_id in page
    retried = console_client.post(
        f"/console/webhooks/{endpoint_id}/retry",
        data={"message_id": message_id, "_csrf_token": form_token(page)},
    )
    assert "The delivery is due again now." in retried.text
    with psycopg.connect(postgres_server.url) as db:
        row = db.execute(
            "SELECT status FROM webhook_messages WHERE fact_id = %s", (message_id,)
        ).fetchone()
    assert row == ("pending",)


def test_webhooks_are_for_admin_keys_only(
    console_client: TestClient[Any], tenant: Tenant, postgres_server: Any
) -> None:
    set_key(postgres_server.url, tenant.live_key_id, scopes="{read}")
    sign_in(console_client, tenant.live_key)
    assert "/console/webhooks" not in console_client.get("/console/").text
    assert console_client.get("/console/webhooks").status_code == 403
