"""The weekly partitions of events and facts (migration 0020, docs/retention.md): listing
them, creating them ahead, dropping the oldest, and deleting one project's expired rows
from one of them.

Locks: a partition is created as a table of its own, then attached, which takes only a
SHARE UPDATE EXCLUSIVE lock on the parent (CREATE TABLE … PARTITION OF would take an
ACCESS EXCLUSIVE one, stopping every reader and writer). One is dropped by first raising
the table's floor past it (so no new row is routed to it), then DETACH … CONCURRENTLY,
which waits for the transactions that may still use it without blocking anyone, then
DROP of a table nobody reads any more. Both need an autocommit connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from psycopg import sql

from bricqs.storage.tenants import Conn

WEEK = timedelta(days=7)
SCHEMA = "partitions"


@dataclass(frozen=True)
class PartitionedTable:
    """A table partitioned by week on `retention_at`: its row's `time_column`, raised to
    the table's floor."""

    parent: str
    time_column: str


EVENTS = PartitionedTable("events", "received_at")
FACTS = PartitionedTable("facts", "occurred_at")
TABLES = (EVENTS, FACTS)


class Partition(NamedTuple):
    """One partition: rows with `start <= retention_at < end`."""

    name: str
    start: datetime
    end: datetime
    detaching: bool
    """A DETACH … CONCURRENTLY was interrupted: it must be finalized."""


def week_start(at: datetime) -> datetime:
    """The Monday 00:00 UTC on or before `at`: where partitions start."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def partition_name(table: PartitionedTable, start: datetime) -> str:
    """The name of the partition of `table` starting at `start`."""
    return f"{table.parent}_{start.astimezone(UTC):%Y%m%d}"


def start_of(table: PartitionedTable, name: str) -> datetime | None:
    """The start of a partition of `table` named by `partition_name`, or None."""
    try:
        return datetime.strptime(name.removeprefix(f"{table.parent}_"), "%Y%m%d").replace(
            tzinfo=UTC
        )
    except ValueError:
        return None


async def list_partitions(conn: Conn, table: PartitionedTable) -> list[Partition]:
    """The table's partitions, oldest first (their bounds read back from the catalog,
    in this session's time zone both ways)."""
    cursor = await conn.execute(
        """
        SELECT c.relname,
               (regexp_match(b, 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz,
               (regexp_match(b, 'TO \\(''([^'']+)''\\)'))[1]::timestamptz,
               i.inhdetachpending
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,
             pg_get_expr(c.relpartbound, c.oid) AS b
        WHERE i.inhparent = %s::regclass
        ORDER BY 2
        """,
        (f"public.{table.parent}",),
    )
    return [Partition(*row) for row in await cursor.fetchall()]


async def create_ahead(conn: Conn, table: PartitionedTable, until: datetime) -> list[str]:
    """Create weekly partitions after the newest until one reaches past `until`; their
    names. Each in its own short transaction on an autocommit connection."""
    partitions = await list_partitions(conn, table)
    end = partitions[-1].end if partitions else week_start(until)
    created: list[str] = []
    while end <= until:
        name = partition_name(table, end)
        async with conn.transaction():
            await conn.execute("SELECT set_config('lock_timeout', '2s', true)")
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ).format(sql.Identifier(SCHEMA, name), sql.Identifier("public", table.parent))
            )
            await conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier("public", table.parent),
                    sql.Identifier(SCHEMA, name),
                    sql.Literal(end),
                    sql.Literal(end + WEEK),
                )
            )
        created.append(name)
        end += WEEK
    return created


async def projects_with_rows(conn: Conn, partition: Partition) -> set[str]:
    """The projects that have rows in the partition (a walk of its primary key, one
    probe per project, not a scan of its rows)."""
    cursor = await conn.execute(
        sql.SQL(
            """
            WITH RECURSIVE walk(project_id) AS (
                (SELECT project_id FROM {t} ORDER BY project_id LIMIT 1)
                UNION ALL
                SELECT (SELECT project_id FROM {t} WHERE project_id > walk.project_id
                        ORDER BY project_id LIMIT 1)
                FROM walk WHERE walk.project_id IS NOT NULL
            )
            SELECT project_id FROM walk WHERE project_id IS NOT NULL
            """
        ).format(t=sql.Identifier(SCHEMA, partition.name))
    )
    return {row[0] for row in await cursor.fetchall()}


async def messages_hold(conn: Conn, partition: Partition, project_id: str | None = None) -> bool:
    """Whether a webhook message (of the project, if given) names a fact of the partition:
    the dispatcher builds a message from its fact, so that fact must stay."""
    cursor = await conn.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM webhook_messages m JOIN {t} f"
            " ON f.project_id = m.project_id AND f.environment = m.environment"
            " AND f.participant_id = m.participant_id AND f.fact_id = m.fact_id"
            " WHERE %(p)s::text IS NULL OR m.project_id = %(p)s)"
        ).format(t=sql.Identifier(SCHEMA, partition.name)),
        {"p": project_id},
    )
    row = await cursor.fetchone()
    return bool(row and row[0])


async def detach_oldest(conn: Conn, table: PartitionedTable, partition: Partition) -> None:
    """Detach `partition`, the table's oldest, without blocking its readers and writers
    (autocommit connection); `drop_detached` finishes. Safe to run again after an
    interruption at any step."""
    async with conn.transaction():
        # From here on every insert routes rows older than the next partition to it.
        await conn.execute(
            "UPDATE retention_floors SET floor = greatest(floor, %s) WHERE parent = %s",
            (partition.end, table.parent),
        )
    how = sql.SQL("FINALIZE" if partition.detaching else "CONCURRENTLY")
    await conn.execute(
        sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(
            sql.Identifier("public", table.parent), sql.Identifier(SCHEMA, partition.name), how
        )
    )


async def detached_tables(conn: Conn, table: PartitionedTable) -> list[str]:
    """Partitions of `table` detached but not yet dropped (a round cut short)."""
    cursor = await conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'r' AND NOT c.relispartition"
        " AND c.relname LIKE %s ORDER BY c.relname",
        (SCHEMA, f"{table.parent}\\_%"),
    )
    return [row[0] for row in await cursor.fetchall()]


async def drop_detached(conn: Conn, table: PartitionedTable, name: str, expired: set[str]) -> int:
    """Drop a detached partition, first moving back into the table the rows that must
    stay: those of projects not in `expired` and facts a webhook message names (rows
    that arrived while it was being detached). Moved rows are routed like new ones (to
    the oldest partition); how many were moved."""
    columns = await _columns(conn, table)
    detached = sql.Identifier(SCHEMA, name)
    keep: sql.Composable = sql.SQL("NOT (d.project_id = ANY(%(expired)s))")
    if table is FACTS:
        keep = sql.SQL(" OR ").join([keep, _NAMED_BY_MESSAGE])
    async with conn.transaction():
        await conn.execute("SELECT set_config('lock_timeout', '2s', true)")
        cursor = await conn.execute(
            sql.SQL(
                "INSERT INTO {parent} ({cols}, retention_at)"
                " SELECT {d_cols}, greatest(d.{time}, (SELECT floor FROM retention_floors"
                " WHERE parent = %(parent)s)) FROM {detached} d WHERE {keep}"
            ).format(
                parent=sql.Identifier("public", table.parent),
                cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
                d_cols=sql.SQL(", ").join(sql.Identifier("d", c) for c in columns),
                time=sql.Identifier(table.time_column),
                detached=detached,
                keep=keep,
            ),
            {"expired": sorted(expired), "parent": table.parent},
        )
        await conn.execute(sql.SQL("DROP TABLE {}").format(detached))
    return cursor.rowcount


_NAMED_BY_MESSAGE = sql.SQL(
    "EXISTS (SELECT 1 FROM webhook_messages m WHERE m.project_id = d.project_id"
    " AND m.environment = d.environment AND m.participant_id = d.participant_id"
    " AND m.fact_id = d.fact_id)"
)


async def _columns(conn: Conn, table: PartitionedTable) -> list[str]:
    """The table's columns but its partition key, in order."""
    cursor = await conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped AND attname <> 'retention_at' ORDER BY attnum",
        (f"public.{table.parent}",),
    )
    return [row[0] for row in await cursor.fetchall()]


async def delete_project_rows(conn: Conn, partition: Partition, project_id: str, limit: int) -> int:
    """Delete up to `limit` of the project's rows in the partition (in the caller's
    transaction); how many. A partition's rows are addressed by ctid within it alone."""
    table = sql.Identifier(SCHEMA, partition.name)
    cursor = await conn.execute(
        sql.SQL(
            "DELETE FROM {t} WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM {t} WHERE project_id = %s LIMIT %s))"
        ).format(t=table),
        (project_id, limit),
    )
    return cursor.rowcount


async def purge_fact_counts(conn: Conn, project_id: str, before: datetime, limit: int) -> int:
    """Delete up to `limit` of the project's per-minute fact counts (migration 0013) older
    than `before`; how many."""
    cursor = await conn.execute(
        "DELETE FROM fact_counts WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM fact_counts WHERE project_id = %s"
        " AND environment IN ('live', 'test') AND minute < %s LIMIT %s))",
        (project_id, before, limit),
    )
    return cursor.rowcount
