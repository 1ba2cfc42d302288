"""Counts over a tenant's events and facts for the console's overview and event pages.

The overview reads the per-minute fact counts that storing keeps (migration 0013). The
event page walks the events themselves: no index serves them by name and time (each index
is paid on every event, see migration 0005), so it ranges over the primary key instead:
event ids are ULIDs, which sort by creation time, so "since T" is a range of ids from the
lowest id of T's millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from bricqs.facts import CUSTOM_FACT_PREFIX
from bricqs.ids import ulid
from bricqs.storage.tenants import Conn, Tenant


def id_floor(prefix: str, at: datetime) -> str:
    """The lowest id with `prefix` (`evt_`, `fact_`) made at or after `at`."""
    return prefix + ulid(int(at.timestamp() * 1000))[:10] + "0" * 16


async def facts_by_hour(
    conn: Conn, tenant: Tenant, day_start: datetime
) -> dict[tuple[int, str], int]:
    """Facts stored from `day_start` on, by (hours since `day_start`, fact type): a read of
    the per-minute counts (migration 0013), proportional to the minutes, not the facts."""
    cursor = await conn.execute(
        "SELECT floor(extract(epoch FROM minute - %s) / 3600)::int, fact_type, sum(count)"
        " FROM fact_counts WHERE project_id = %s AND environment = %s AND minute >= %s"
        " GROUP BY 1, 2",
        (day_start, tenant.project_id, tenant.environment, day_start),
    )
    return {(hour, fact_type): int(count) for hour, fact_type, count in await cursor.fetchall()}


async def events_since(conn: Conn, tenant: Tenant, times: Sequence[datetime]) -> list[int]:
    """Events stored since each of `times` (to the minute: counts are kept per minute), as
    their custom facts (one per event)."""
    cursor = await conn.execute(
        "SELECT (SELECT coalesce(sum(c.count), 0) FROM fact_counts c"
        " WHERE c.project_id = %s AND c.environment = %s AND c.minute >= date_trunc('minute', t.s)"
        " AND starts_with(c.fact_type, %s))"
        " FROM unnest(%s::timestamptz[]) WITH ORDINALITY AS t(s, n) ORDER BY t.n",
        (tenant.project_id, tenant.environment, CUSTOM_FACT_PREFIX, list(times)),
    )
    return [int(row[0]) for row in await cursor.fetchall()]


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
