"""Reading idempotency keys held in PostgreSQL, for ingest's answer to a resend that Redis
no longer remembers (keys are claimed by `storage.events.store_events`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from bricqs.storage.events import Holder


async def find_key_holders(
    conn: AsyncConnection[Any], project_id: str, environment: str, keys: Sequence[str]
) -> dict[str, Holder]:
    """The events holding those of `keys` that have not expired, by key."""
    cursor = await conn.execute(
        "SELECT idempotency_key, event_id, payload_hash FROM idempotency_keys"
        " WHERE project_id = %s AND environment = %s AND idempotency_key = ANY(%s)"
        " AND expires_at > now()",
        (project_id, environment, list(keys)),
    )
    return {row[0]: Holder(row[1], row[2]) for row in await cursor.fetchall()}
