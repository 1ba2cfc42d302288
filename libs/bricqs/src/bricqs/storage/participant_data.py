"""Everything stored about one participant, read as a whole (export) or erased in bounded
batches (erasure), and the record of each erasure.

The tables are found, not listed: every table of the public schema with `project_id`,
`environment` and `participant_id` columns holds a participant's rows, so a table added
later under the same convention is exported and erased without a change here. Tables
that name the participant only through another row are listed in `_DEPENDENT`; they are
erased before the rows they point through.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, NamedTuple

from psycopg import sql

from bricqs.ids import ulid
from bricqs.storage.tenants import Conn, Tenant

_PARTICIPANT_TABLES = """
SELECT c.table_name FROM information_schema.columns c
JOIN information_schema.tables t
  ON t.table_schema = c.table_schema AND t.table_name = c.table_name
WHERE c.table_schema = 'public' AND c.column_name = 'participant_id'
  AND t.table_type = 'BASE TABLE'
  AND EXISTS (SELECT 1 FROM information_schema.columns p WHERE p.table_schema = 'public'
              AND p.table_name = c.table_name AND p.column_name = 'project_id')
  AND EXISTS (SELECT 1 FROM information_schema.columns e WHERE e.table_schema = 'public'
              AND e.table_name = c.table_name AND e.column_name = 'environment')
ORDER BY c.table_name
"""


class _Dependent(NamedTuple):
    """A table whose rows belong to the participant through a row of `parent`."""

    table: str
    column: str
    parent: str


# The processor's idempotency memory carries an event id, not the participant. (Outbox
# messages name their fact's participant since migration 0024, so they are found with
# the participant's tables.)
_DEPENDENT = (_Dependent("idempotency_keys", "event_id", "events"),)

# Erased before the rest: a pending message whose fact is gone could never be sent (the
# dispatcher builds it from the fact), so an erasure cut short must not leave one.
_ERASED_FIRST = "webhook_messages"


def participant_hash(tenant: Tenant, participant_id: str) -> bytes:
    """What the erasure record keeps instead of the id: a digest of tenant and id."""
    named = f"{tenant.project_id}\x00{tenant.environment}\x00{participant_id}"
    return hashlib.sha256(named.encode()).digest()


async def participant_tables(conn: Conn) -> list[str]:
    """The tables holding rows keyed by participant, by name."""
    cursor = await conn.execute(_PARTICIPANT_TABLES)
    return [row[0] for row in await cursor.fetchall()]


def _of_participant(table: str) -> sql.Composed:
    """The rows of `table` that are the participant's in the tenant."""
    return sql.SQL(
        "SELECT {t}.ctid FROM {t} WHERE {t}.project_id = %(p)s AND {t}.environment = %(e)s"
        " AND {t}.participant_id = %(id)s"
    ).format(t=sql.Identifier(table))


# Said again around the ctids `_of_participant` selects: in a partitioned table (events,
# facts) a ctid names a row in each partition, so ctids alone reach other participants'.
_THEIRS = sql.SQL(
    " AND x.project_id = %(p)s AND x.environment = %(e)s AND x.participant_id = %(id)s"
)
_ANY = sql.SQL("")


def _of_dependent(dependent: _Dependent) -> sql.Composed:
    """The rows of a dependent table that hang on the participant's parent rows."""
    return sql.SQL(
        "SELECT d.ctid FROM {t} d JOIN {parent} r ON r.project_id = d.project_id"
        " AND r.environment = d.environment AND r.{c} = d.{c}"
        " WHERE d.project_id = %(p)s AND d.environment = %(e)s AND r.participant_id = %(id)s"
    ).format(
        t=sql.Identifier(dependent.table),
        parent=sql.Identifier(dependent.parent),
        c=sql.Identifier(dependent.column),
    )


async def export_rows(
    conn: Conn, tenant: Tenant, participant_id: str
) -> dict[str, list[dict[str, Any]]]:
    """Every stored row about the participant, by table (JSON as PostgreSQL renders it)."""
    params = _params(tenant, participant_id)
    selections = [(t, _of_participant(t), _THEIRS) for t in await participant_tables(conn)]
    selections += [(d.table, _of_dependent(d), _ANY) for d in _DEPENDENT]
    rows: dict[str, list[dict[str, Any]]] = {}
    for table, selection, guard in selections:
        query = sql.SQL(
            "SELECT coalesce(jsonb_agg(to_jsonb(x) - 'project_id' - 'environment'), '[]')"
            " FROM {t} x WHERE x.ctid IN ({selection}){guard}"
        ).format(t=sql.Identifier(table), selection=selection, guard=guard)
        cursor = await conn.execute(query, params)
        row = await cursor.fetchone()
        rows[table] = list(row[0]) if row else []
    return rows


async def erase_batch(conn: Conn, tenant: Tenant, participant_id: str, limit: int) -> int:
    """Delete up to `limit` of the participant's rows from the first table that still has
    some (dependents and webhook messages first); the number deleted, 0 once nothing is
    left.

    The caller commits between batches, so no transaction holds many row locks long, and
    a run cut short is resumed by running again.
    """
    params = _params(tenant, participant_id) | {"limit": limit}
    selections = [(d.table, _of_dependent(d), _ANY) for d in _DEPENDENT]
    tables = sorted(await participant_tables(conn), key=lambda t: t != _ERASED_FIRST)
    selections += [(t, _of_participant(t), _THEIRS) for t in tables]
    for table, selection, guard in selections:
        query = sql.SQL(
            "DELETE FROM {t} x WHERE x.ctid = ANY(ARRAY({selection} LIMIT %(limit)s)){guard}"
        )
        cursor = await conn.execute(
            query.format(t=sql.Identifier(table), selection=selection, guard=guard), params
        )
        if cursor.rowcount:
            return cursor.rowcount
    return 0


async def recent_idempotent_event_ids(
    conn: Conn, tenant: Tenant, participant_id: str, since: datetime
) -> set[str]:
    """Ids of the participant's events received since `since` with an idempotency key:
    those whose key Redis may still remember (it names the event id)."""
    cursor = await conn.execute(
        "SELECT event_id FROM events WHERE project_id = %s AND environment = %s"
        " AND participant_id = %s AND idempotency_key IS NOT NULL AND received_at >= %s",
        (tenant.project_id, tenant.environment, participant_id, since),
    )
    return {row[0] for row in await cursor.fetchall()}


class Erasure(NamedTuple):
    """The record of one erasure request."""

    erasure_id: str
    requested_by: str
    requested_at: datetime
    completed_at: datetime | None
    rows_erased: int
    keys_erased: int


_ERASURE_COLUMNS = sql.SQL(
    "erasure_id, requested_by, requested_at, completed_at, rows_erased, keys_erased"
)


async def latest_erasure(conn: Conn, tenant: Tenant, participant_id: str) -> Erasure | None:
    """The participant's latest erasure request, done or not."""
    cursor = await conn.execute(
        sql.SQL(
            "SELECT {} FROM participant_erasures"
            " WHERE project_id = %s AND environment = %s AND participant_hash = %s"
            " ORDER BY requested_at DESC, erasure_id DESC LIMIT 1"
        ).format(_ERASURE_COLUMNS),
        (tenant.project_id, tenant.environment, participant_hash(tenant, participant_id)),
    )
    row = await cursor.fetchone()
    return Erasure(*row) if row else None


async def start_erasure(
    conn: Conn, tenant: Tenant, participant_id: str, requested_by: str
) -> Erasure:
    """Record a new erasure request, not yet completed (or the one in progress)."""
    cursor = await conn.execute(
        sql.SQL(
            "INSERT INTO participant_erasures"
            " (erasure_id, project_id, environment, participant_hash, requested_by)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (project_id, environment, participant_hash)"
            " WHERE completed_at IS NULL DO NOTHING RETURNING {}"
        ).format(_ERASURE_COLUMNS),
        (
            "era_" + ulid(),
            tenant.project_id,
            tenant.environment,
            participant_hash(tenant, participant_id),
            requested_by,
        ),
    )
    row = await cursor.fetchone()
    if row is not None:
        return Erasure(*row)
    # A concurrent request started one first: carry on with it.
    started = await latest_erasure(conn, tenant, participant_id)
    assert started is not None
    return started


async def count_erased(conn: Conn, erasure_id: str, *, rows: int, keys: int) -> None:
    """Add to what an erasure has deleted (as it goes, so a resumed run keeps the tally)."""
    await conn.execute(
        "UPDATE participant_erasures SET rows_erased = rows_erased + %s,"
        " keys_erased = keys_erased + %s WHERE erasure_id = %s",
        (rows, keys, erasure_id),
    )


async def complete_erasure(conn: Conn, erasure_id: str) -> Erasure:
    """Mark an erasure done; its record as it now stands."""
    cursor = await conn.execute(
        sql.SQL(
            "UPDATE participant_erasures SET completed_at = now() WHERE erasure_id = %s"
            " RETURNING {}"
        ).format(_ERASURE_COLUMNS),
        (erasure_id,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return Erasure(*row)


def _params(tenant: Tenant, participant_id: str) -> dict[str, Any]:
    return {"p": tenant.project_id, "e": tenant.environment, "id": participant_id}
