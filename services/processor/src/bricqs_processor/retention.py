"""Retention (docs/retention.md): the chore that keeps events and facts partitioned ahead
and lets go of the history every project is done with.

Each round, for events and then facts:
1. weekly partitions are created up to RETENTION_WEEKS_AHEAD weeks ahead;
2. the oldest partition is dropped while every project with rows in it keeps less history
   than its age (and, for facts, no webhook message still names one of its facts):
   floor raised, DETACH … CONCURRENTLY, rows that arrived meanwhile and must stay moved
   back, DROP. A project set to keep forever holds every partition it has rows in;
3. in the partitions kept, the rows of each project whose retention they are past are
   deleted in bounded transactions (for facts, not while a webhook message of that
   project names one of them).
Then the console's per-minute fact counts older than each project's retention go.

Mechanics state never reads events or facts (progress, streaks, ledger, awards and
standings are their own tables), so none of this changes a participant's state.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from bricqs.storage import partitions, tenants
from bricqs.storage.partitions import FACTS, TABLES, Partition, PartitionedTable
from bricqs.storage.pools import command_connection
from bricqs.storage.tenants import Conn
from bricqs_processor.settings import ProcessorSettings

log = logging.getLogger("bricqs.processor")


@dataclass
class RetentionReport:
    """What one round did."""

    created: int = 0
    """Partitions created ahead."""
    dropped: int = 0
    """Partitions dropped whole."""
    moved: int = 0
    """Rows that arrived in a partition while it was being dropped, kept."""
    deleted: int = 0
    """Rows of projects with a shorter retention deleted from partitions kept."""
    counts_deleted: int = 0
    """Per-minute fact counts deleted."""

    def total(self) -> int:
        """Everything the round changed."""
        return self.created + self.dropped + self.moved + self.deleted + self.counts_deleted


def expired_projects(kept: dict[str, int | None], ends: datetime, now: datetime) -> set[str]:
    """The projects whose retention is past every row of a partition ending at `ends`."""
    return {p for p, days in kept.items() if days is not None and ends <= now - timedelta(days)}


async def retention_round(
    conn: Conn, now: datetime, *, weeks_ahead: int, chunk: int
) -> RetentionReport:
    """One round of retention on an autocommit connection, as of `now`."""
    report = RetentionReport()
    kept = await tenants.retentions(conn)
    for table in TABLES:
        until = now + weeks_ahead * partitions.WEEK
        report.created += len(await partitions.create_ahead(conn, table, until))
        for name in await partitions.detached_tables(conn, table):  # a round cut short
            start = partitions.start_of(table, name)
            expired = (
                set() if start is None else expired_projects(kept, start + partitions.WEEK, now)
            )
            report.moved += await partitions.drop_detached(conn, table, name, expired)
        remaining = await _drop_oldest(conn, table, kept, now, report)
        for partition in remaining:
            if partition.end > now:
                break
            await _delete_expired(conn, table, partition, kept, now, chunk, report)
    for project, days in sorted(kept.items()):
        if days is not None:
            before = now - timedelta(days)
            purge = partial(partitions.purge_fact_counts, conn, project, before, chunk)
            report.counts_deleted += await _chunks(conn, chunk, purge)
    return report


async def _drop_oldest(
    conn: Conn,
    table: PartitionedTable,
    kept: dict[str, int | None],
    now: datetime,
    report: RetentionReport,
) -> list[Partition]:
    """Drop partitions from the oldest while they may go; those left."""
    remaining = await partitions.list_partitions(conn, table)
    while len(remaining) > 1 and remaining[0].end <= now:
        oldest = remaining[0]
        expired = expired_projects(kept, oldest.end, now)
        if not await partitions.projects_with_rows(conn, oldest) <= expired:
            break
        if table is FACTS and await partitions.messages_hold(conn, oldest):
            break
        await partitions.detach_oldest(conn, table, oldest)
        report.moved += await partitions.drop_detached(conn, table, oldest.name, expired)
        report.dropped += 1
        log.info("retention: dropped partition %s (before %s)", oldest.name, oldest.end)
        remaining.pop(0)
    return remaining


async def _delete_expired(
    conn: Conn,
    table: PartitionedTable,
    partition: Partition,
    kept: dict[str, int | None],
    now: datetime,
    chunk: int,
    report: RetentionReport,
) -> None:
    expired = expired_projects(kept, partition.end, now)
    for project in sorted(await partitions.projects_with_rows(conn, partition) & expired):
        if table is FACTS and await partitions.messages_hold(conn, partition, project):
            continue
        delete = partial(partitions.delete_project_rows, conn, partition, project, chunk)
        report.deleted += await _chunks(conn, chunk, delete)


async def _chunks(conn: Conn, chunk: int, delete: Callable[[], Awaitable[int]]) -> int:
    """Run `delete` in a transaction of its own until a run deletes less than `chunk`."""
    total = 0
    while True:
        async with conn.transaction():
            deleted = await delete()
        total += deleted
        if deleted < chunk:
            return total


InTurn = Callable[[str, int, Callable[[], Awaitable[int]]], Awaitable[int | None]]
"""Housekeeping's runner of a chore on one replica per period (`Housekeeping.in_turn`)."""


def chore(settings: ProcessorSettings, in_turn: InTurn) -> Callable[[], Awaitable[int | None]]:
    """The housekeeping chore: on the replica that takes the period's turn, one round on
    a connection of its own (DETACH … CONCURRENTLY needs autocommit); what it changed."""

    async def run() -> int:
        async with await command_connection(settings.database_url) as conn:
            report = await retention_round(
                conn,
                datetime.now(UTC),
                weeks_ahead=settings.retention_weeks_ahead,
                chunk=settings.retention_delete_chunk,
            )
        if report.total():
            log.info("retention: %s", report)
        return report.total()

    return partial(in_turn, "retention", settings.retention_interval_ms, run)
