"""Counts over a tenant's events and facts for the console's overview and event pages.

No index serves facts by type and time (each index on facts is paid on every event, see
migration 0005), so these reads range over the primary keys instead: event and fact ids
are ULIDs, which sort by creation time, so "since T" is a range of ids from the lowest id
of T's millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bricqs.ids import ulid
from bricqs.storage.facts import FactRow
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


async def recent_facts_of_type(
    conn: Conn, tenant: Tenant, fact_type: str, since: datetime, limit: int
) -> list[tuple[str, FactRow]]:
    """The newest facts of one type made since `since`, with their participant, newest
    first (`since` bounds the walk for a type that is rare)."""
    cursor = await conn.execute(
        "SELECT participant_id, fact_id, fact_type, event_id, properties, occurred_at,"
        " created_at FROM facts WHERE project_id = %s AND environment = %s AND fact_id >= %s"
        " AND fact_type = %s ORDER BY fact_id DESC LIMIT %s",
        (tenant.project_id, tenant.environment, id_floor("fact_", since), fact_type, limit),
    )
    return [(row[0], FactRow(*row[1:])) for row in await cursor.fetchall()]
