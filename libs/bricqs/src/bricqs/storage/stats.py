"""Counts over a tenant's events and facts for the console's overview and event pages.

No index serves facts by type and time (each index on facts is paid on every event, see
migration 0005), so these reads range over the primary keys instead: event and fact ids
are ULIDs, which sort by creation time, so "since T" is a range of ids from the lowest id
of T's millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from bricqs.ids import ulid
from bricqs.storage.tenants import Conn, Tenant


def id_floor(prefix: str, at: datetime) -> str:
    """The lowest id with `prefix` (`evt_`, `fact_`) made at or after `at`."""
    return prefix + ulid(int(at.timestamp() * 1000))[:10] + "0" * 16


async def event_counts(
    conn: Conn, tenant: Tenant, ranges: Sequence[tuple[datetime, datetime]]
) -> list[int]:
    """How many events were received in each [start, end) (by their ids: the time ingest
    accepted them)."""
    cursor = await conn.execute(
        "SELECT (SELECT count(*) FROM events e WHERE e.project_id = %s AND e.environment = %s"
        " AND e.event_id >= r.low AND e.event_id < r.high)"
        " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS r(low, high, n) ORDER BY r.n",
        (
            tenant.project_id,
            tenant.environment,
            [id_floor("evt_", start) for start, _ in ranges],
            [id_floor("evt_", end) for _, end in ranges],
        ),
    )
    return [int(row[0]) for row in await cursor.fetchall()]


async def fact_counts_since(conn: Conn, tenant: Tenant, since: datetime) -> dict[str, int]:
    """Facts made since `since`, by type (a custom fact is made when its event is received)."""
    cursor = await conn.execute(
        "SELECT fact_type, count(*) FROM facts WHERE project_id = %s AND environment = %s"
        " AND fact_id >= %s GROUP BY fact_type",
        (tenant.project_id, tenant.environment, id_floor("fact_", since)),
    )
    return {fact_type: int(count) for fact_type, count in await cursor.fetchall()}


class RecentEvent(NamedTuple):
    """A stored event, as the console's event page lists it."""

    event_id: str
    participant_id: str
    properties: dict[str, Any]
    occurred_at: datetime
    received_at: datetime


async def recent_events(
    conn: Conn, tenant: Tenant, event_name: str, since: datetime, limit: int
) -> list[RecentEvent]:
    """The newest events of one name received since `since`, newest first (`since` bounds
    the walk for a name that is rare). The events table holds no outcomes, so the walk
    skips only other names."""
    cursor = await conn.execute(
        "SELECT event_id, participant_id, properties, occurred_at, received_at FROM events"
        " WHERE project_id = %s AND environment = %s AND event_id >= %s AND event_name = %s"
        " ORDER BY event_id DESC LIMIT %s",
        (tenant.project_id, tenant.environment, id_floor("evt_", since), event_name, limit),
    )
    return [RecentEvent(*row) for row in await cursor.fetchall()]
