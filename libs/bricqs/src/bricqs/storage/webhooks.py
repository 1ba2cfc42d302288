"""Webhook endpoints, and the delivery log of their messages (SPEC §11); the outbox the
messages are written to and claimed from is `webhook_outbox.py`."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from bricqs.ids import ulid
from bricqs.storage.tenants import Conn, Tenant
from bricqs.webhook_secrets import SecretBox

# The outcomes an endpoint can subscribe to; `*` means all of them.
EVENT_TYPES = frozenset(
    {
        "badge.awarded",
        "points.awarded",
        "points.deducted",
        "points.refunded",
        "points.expired",
        "challenge.completed",
        "streak.extended",
        "tier.changed",
        "leaderboard.finished",
        "reward.claimed",
        "reward.cancelled",
        "streak.at_risk",
        "streak.lost",
        "streak.freeze_consumed",
        "challenge.expired",
    }
)
ALL_TYPES = "*"


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: `whsec_` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class Endpoint(NamedTuple):
    """An endpoint as the api shows it (never its secrets)."""

    endpoint_id: str
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    secret_rotating_until: datetime | None
    created_at: datetime
    updated_at: datetime


_ENDPOINT_COLUMNS = (
    "endpoint_id, url, event_types, description, enabled, disabled_reason,"
    " CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END,"
    " created_at, updated_at"
)


async def create_endpoint(
    conn: Conn,
    tenant: Tenant,
    *,
    url: str,
    event_types: Sequence[str],
    description: str,
    enabled: bool,
    box: SecretBox,
) -> tuple[Endpoint, str]:
    """A new endpoint and its secret (which nothing returns again), stored sealed."""
    secret = new_secret()
    endpoint_id = "whe_" + ulid()
    cursor = await conn.execute(
        "INSERT INTO webhook_endpoints (endpoint_id, project_id, environment, url,"  # noqa: S608 - constant column list
        " event_types, description, enabled, secret) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {_ENDPOINT_COLUMNS}",
        (
            endpoint_id,
            tenant.project_id,
            tenant.environment,
            url,
            list(event_types),
            description,
            enabled,
            box.seal(secret, endpoint_id),
        ),
    )
    row = await cursor.fetchone()
    assert row is not None
    return Endpoint(*row), secret


async def list_endpoints(conn: Conn, tenant: Tenant) -> list[Endpoint]:
    """The tenant's endpoints, oldest first."""
    cursor = await conn.execute(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints"  # noqa: S608 - constant column list
        " WHERE project_id = %s AND environment = %s ORDER BY endpoint_id",
        (tenant.project_id, tenant.environment),
    )
    return [Endpoint(*row) for row in await cursor.fetchall()]


async def get_endpoint(conn: Conn, tenant: Tenant, endpoint_id: str) -> Endpoint | None:
    """One of the tenant's endpoints."""
    cursor = await conn.execute(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints"  # noqa: S608 - constant column list
        " WHERE project_id = %s AND environment = %s AND endpoint_id = %s",
        (tenant.project_id, tenant.environment, endpoint_id),
    )
    row = await cursor.fetchone()
    return Endpoint(*row) if row else None


async def update_endpoint(
    conn: Conn, tenant: Tenant, endpoint_id: str, changes: Mapping[str, Any]
) -> Endpoint | None:
    """Change some of url, event_types, description, enabled; enabling clears the reason
    the dispatcher disabled it."""
    allowed = ("url", "event_types", "description", "enabled")
    fields = [name for name in allowed if name in changes]
    assignments = "".join(f", {name} = %({name})s" for name in fields)
    if changes.get("enabled"):
        assignments += ", disabled_reason = NULL"
    cursor = await conn.execute(
        f"UPDATE webhook_endpoints SET updated_at = now(){assignments}"  # noqa: S608 - names from `allowed`
        " WHERE project_id = %(project)s AND environment = %(environment)s"
        f" AND endpoint_id = %(endpoint_id)s RETURNING {_ENDPOINT_COLUMNS}",
        {
            **{name: changes[name] for name in fields},
            "project": tenant.project_id,
            "environment": tenant.environment,
            "endpoint_id": endpoint_id,
        },
    )
    row = await cursor.fetchone()
    return Endpoint(*row) if row else None


async def rotate_secret(
    conn: Conn, tenant: Tenant, endpoint_id: str, overlap_seconds: int, box: SecretBox
) -> tuple[Endpoint, str] | None:
    """A new secret; the old one still signs (a second signature) for `overlap_seconds`."""
    secret = new_secret()
    cursor = await conn.execute(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = %s,"  # noqa: S608 - constant column list
        " previous_secret_expires_at = now() + make_interval(secs => %s), updated_at = now()"
        " WHERE project_id = %s AND environment = %s AND endpoint_id = %s"
        f" RETURNING {_ENDPOINT_COLUMNS}",
        (
            box.seal(secret, endpoint_id),
            overlap_seconds,
            tenant.project_id,
            tenant.environment,
            endpoint_id,
        ),
    )
    row = await cursor.fetchone()
    return (Endpoint(*row), secret) if row else None


async def reseal_secrets(conn: Conn, box: SecretBox, *, limit: int = 500) -> int:
    """Seal under the box's first key up to `limit` endpoints' secrets stored in clear or
    under an older key it still holds (after a key rotation, or from before encryption);
    how many. A secret under a key the box lacks is left as it is."""
    if box.primary is None:
        return 0
    cursor = await conn.execute(
        "SELECT endpoint_id, secret, previous_secret FROM webhook_endpoints"
        " WHERE (SELECT bool_or(s IS NOT NULL AND split_part(s, ':', 2) <> %(primary)s"
        "   AND (s NOT LIKE 'enc1:%%' OR split_part(s, ':', 2) = ANY(%(known)s)))"
        "   FROM unnest(ARRAY[secret, previous_secret]) AS s)"
        " LIMIT %(limit)s FOR NO KEY UPDATE SKIP LOCKED",
        {"primary": box.primary, "known": box.key_ids, "limit": limit},
    )
    rows = await cursor.fetchall()
    for endpoint_id, *stored in rows:
        secret, previous = (box.reseal(s, endpoint_id) if s else None for s in stored)
        await conn.execute(
            "UPDATE webhook_endpoints SET secret = %s, previous_secret = %s WHERE endpoint_id = %s",
            (secret, previous, endpoint_id),
        )
    return len(rows)


async def delete_endpoint(conn: Conn, tenant: Tenant, endpoint_id: str) -> bool:
    """Delete an endpoint and its messages; False when there was none."""
    cursor = await conn.execute(
        "DELETE FROM webhook_endpoints"
        " WHERE project_id = %s AND environment = %s AND endpoint_id = %s",
        (tenant.project_id, tenant.environment, endpoint_id),
    )
    if cursor.rowcount == 0:
        return False
    await conn.execute("DELETE FROM webhook_messages WHERE endpoint_id = %s", (endpoint_id,))
    return True


class Delivery(NamedTuple):
    """A message as the delivery log shows it."""

    message_id: str
    """The outcome's fact id: the webhook-id of every attempt."""
    event_type: str
    status: str
    attempts: int
    last_status: int | None
    last_latency_ms: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None


async def list_deliveries(
    conn: Conn, tenant: Tenant, endpoint_id: str, *, after: str | None, limit: int
) -> list[Delivery]:
    """An endpoint's messages, newest first, after a cursor (a message id)."""
    cursor = await conn.execute(
        "SELECT fact_id, fact_type, status, attempts, last_status, last_latency_ms,"
        " last_error, CASE WHEN status = 'pending' THEN next_attempt_at END,"
        " created_at, finished_at FROM webhook_messages"
        " WHERE project_id = %s AND environment = %s AND endpoint_id = %s"
        " AND (%s::text IS NULL OR fact_id < %s) ORDER BY fact_id DESC LIMIT %s",
        (tenant.project_id, tenant.environment, endpoint_id, after, after, limit),
    )
    return [Delivery(*row) for row in await cursor.fetchall()]


async def retry_message(conn: Conn, tenant: Tenant, endpoint_id: str, message_id: str) -> bool:
    """Make a delivered or failed message due again now (a pending one is left alone)."""
    cursor = await conn.execute(
        "UPDATE webhook_messages SET status = 'pending', next_attempt_at = now(),"
        " finished_at = NULL, lease_token = NULL"
        " WHERE project_id = %s AND environment = %s AND endpoint_id = %s AND fact_id = %s"
        " AND status <> 'pending'",
        (tenant.project_id, tenant.environment, endpoint_id, message_id),
    )
    return cursor.rowcount > 0


async def replay_messages(
    conn: Conn,
    tenant: Tenant,
    endpoint_id: str,
    *,
    since: datetime,
    until: datetime,
    statuses: Sequence[str],
) -> int:
    """Make due again now every message of the endpoint created in [since, until) whose
    status is one of `statuses` (delivered, failed); how many."""
    cursor = await conn.execute(
        "UPDATE webhook_messages SET status = 'pending', next_attempt_at = now(),"
        " finished_at = NULL, lease_token = NULL"
        " WHERE project_id = %s AND environment = %s AND endpoint_id = %s"
        " AND created_at >= %s AND created_at < %s AND status = ANY(%s)",
        (tenant.project_id, tenant.environment, endpoint_id, since, until, list(statuses)),
    )
    return cursor.rowcount
