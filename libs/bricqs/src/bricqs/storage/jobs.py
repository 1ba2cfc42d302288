"""Backfill jobs: created by the api, claimed by runners with a lease, advanced a chunk of
participants at a time in the transaction that applies the chunk (migration 0018)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from psycopg.types.json import Jsonb

from bricqs.ids import ulid
from bricqs.storage.tenants import Conn, Tenant

_COLUMNS = (
    "job_id, project_id, environment, kind, code, definition_version, notify, status,"
    " participants_total, participants_done, outcomes, cursor, error, requested_by,"
    " created_at, updated_at, finished_at, dry_run"
)


class Job(NamedTuple):
    """A backfill job as stored."""

    job_id: str
    project_id: str
    environment: str
    kind: str
    code: str
    definition_version: int
    notify: bool
    status: str
    participants_total: int
    participants_done: int
    outcomes: dict[str, int]
    cursor: str | None
    """The last participant whose chunk committed (None before the first, and once done)."""
    error: str | None
    requested_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    dry_run: bool
    """Count what the backfill would do, writing nothing but the job's counts."""

    @property
    def tenant(self) -> Tenant:
        """The project and environment the job works in."""
        return Tenant(self.project_id, self.environment)


async def _one(cursor: Any) -> Job | None:
    row = await cursor.fetchone()
    return None if row is None else Job(*row)


async def create_job(
    conn: Conn,
    tenant: Tenant,
    *,
    kind: str,
    code: str,
    definition_version: int,
    notify: bool,
    requested_by: str,
    participants_total: int,
    dry_run: bool = False,
) -> Job | None:
    """A new pending job; None when the definition already has a job of the same kind
    (dry run or not) pending or running."""
    cursor = await conn.execute(
        "INSERT INTO backfill_jobs (job_id, project_id, environment, kind, code,"  # noqa: S608
        " definition_version, notify, requested_by, participants_total, dry_run)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        f" RETURNING {_COLUMNS}",
        (
            "job_" + ulid(),
            tenant.project_id,
            tenant.environment,
            kind,
            code,
            definition_version,
            notify,
            requested_by,
            participants_total,
            dry_run,
        ),
    )
    return await _one(cursor)


async def open_job(
    conn: Conn, tenant: Tenant, kind: str, code: str, *, dry_run: bool = False
) -> Job | None:
    """The definition's job (or dry run) pending or running, if any."""
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM backfill_jobs WHERE project_id = %s AND environment = %s"  # noqa: S608
        " AND kind = %s AND code = %s AND dry_run = %s AND status IN ('pending', 'running')",
        (tenant.project_id, tenant.environment, kind, code, dry_run),
    )
    return await _one(cursor)


async def get_job(conn: Conn, tenant: Tenant, job_id: str) -> Job | None:
    """One job of the tenant."""
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM backfill_jobs"  # noqa: S608 - a fixed column list
        " WHERE project_id = %s AND environment = %s AND job_id = %s",
        (tenant.project_id, tenant.environment, job_id),
    )
    return await _one(cursor)


async def list_jobs(conn: Conn, tenant: Tenant, *, before: str | None, limit: int) -> list[Job]:
    """The tenant's jobs, newest first, before a job id (ids sort by creation time)."""
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM backfill_jobs WHERE project_id = %s AND environment = %s"  # noqa: S608
        " AND (%s::text IS NULL OR job_id < %s) ORDER BY job_id DESC LIMIT %s",
        (tenant.project_id, tenant.environment, before, before, limit),
    )
    return [Job(*row) for row in await cursor.fetchall()]


async def claim_job(
    conn: Conn, *, owner: str, now: datetime, lease_until: datetime, created_before: datetime
) -> Job | None:
    """Lease the oldest open job created before `created_before` whose lease is free
    (never taken, or expired at `now`: its runner died), for `owner` until `lease_until`;
    None when there is none.

    SKIP LOCKED: runners claiming at once take different jobs instead of queueing.
    """
    cursor = await conn.execute(
        "UPDATE backfill_jobs SET status = 'running', lease_owner = %s, lease_until = %s,"  # noqa: S608
        " updated_at = now() WHERE job_id = ("
        "  SELECT job_id FROM backfill_jobs WHERE status IN ('pending', 'running')"
        "  AND (lease_until IS NULL OR lease_until <= %s) AND created_at <= %s"
        "  ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
        f" RETURNING {_COLUMNS}",
        (owner, lease_until, now, created_before),
    )
    return await _one(cursor)


async def hold_job(conn: Conn, job_id: str, *, owner: str, now: datetime) -> Job | None:
    """Lock the job's row for this chunk's transaction if `owner` still holds its lease at
    `now`; None when the lease was lost (expired, or taken over by another runner).

    Chunks of one job commit one after the other, each reading the cursor under this
    lock, so a runner whose lease was taken over cannot apply a chunk a second time.
    """
    cursor = await conn.execute(
        f"SELECT {_COLUMNS} FROM backfill_jobs WHERE job_id = %s AND status = 'running'"  # noqa: S608
        " AND lease_owner = %s AND lease_until > %s FOR UPDATE",
        (job_id, owner, now),
    )
    return await _one(cursor)


async def advance_job(
    conn: Conn,
    job: Job,
    *,
    cursor: str,
    done: int,
    outcomes: dict[str, int],
    lease_until: datetime,
) -> None:
    """Record a chunk: the cursor moves to its last participant, counts grow, the lease
    is extended. In the chunk's transaction, under `hold_job`'s lock."""
    merged = {k: job.outcomes.get(k, 0) + outcomes.get(k, 0) for k in {*job.outcomes, *outcomes}}
    await conn.execute(
        "UPDATE backfill_jobs SET cursor = %s, participants_done = participants_done + %s,"
        " participants_total = GREATEST(participants_total, participants_done + %s),"
        " outcomes = %s, lease_until = %s, updated_at = now() WHERE job_id = %s",
        (cursor, done, done, Jsonb(merged), lease_until, job.job_id),
    )


async def finish_job(conn: Conn, job_id: str, *, error: str | None = None) -> None:
    """Mark the job done (or failed, with `error`). The cursor, a participant id, is
    cleared: a finished job keeps no personal data."""
    await conn.execute(
        "UPDATE backfill_jobs SET status = %s, error = %s, cursor = NULL, lease_owner = NULL,"
        " lease_until = NULL, finished_at = now(), updated_at = now() WHERE job_id = %s",
        ("failed" if error else "done", error, job_id),
    )
