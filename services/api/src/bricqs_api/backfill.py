"""Backfill a definition over the facts stored before it existed, and follow its job.

`POST /admin/{badges|challenges}/{code}/backfill?dry_run=true` answers what every
participant would gain, writing nothing; without `dry_run` it records a job that the
processors work through (docs/backfill.md), answered 202 with the job to follow at
`GET /admin/jobs/{job_id}`. `notify=false` records the outcomes without webhooks;
`dry_run=true&as_job=true` counts in a job, for environments too large for one request.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromQuery, PathParameter

from bricqs.mechanics.backfill import BACKFILL_KINDS, Target, dry_run_outcomes
from bricqs.mechanics.cache import decode_definition
from bricqs.mechanics.definitions import Badge, Challenge
from bricqs.storage.definitions import get_definition
from bricqs.storage.jobs import Job, create_job, get_job, list_jobs, open_job
from bricqs.storage.participants import count_participants
from bricqs.storage.tenants import Conn, Tenant
from bricqs.web.auth import requires
from bricqs.web.problems import ProblemError
from bricqs_api.context import PROBLEMS, Caller, CallerTenant, CodePath, Connection, Page

DRY_RUN_CHUNK = 200
"""Participants read per query by a dry run."""

JobPath = Annotated[str, PathParameter(pattern=r"^job_[0-9A-Z]{26}$")]

# 200: the dry run's answer, or the job already under way; 202: a job started.
BACKFILL_RESPONSES = {
    **PROBLEMS,
    200: ResponseSpec(
        data_container=dict[str, Any],
        description="The dry run's counts, or the definition's job already under way.",
    ),
}


def job_body(job: Job) -> dict[str, Any]:
    """A job as the API shows it."""
    return job._asdict()


def backfill_controller(segment: str) -> type[Controller]:
    """The backfill route of one kind of definition (`badges`, `challenges`)."""
    kind = BACKFILL_KINDS[segment]

    class BackfillController(Controller):
        path = f"/admin/{segment}"
        tags = ("backfill",)
        security = requires("admin")

        @post(
            "/{code:str}/backfill",
            responses=BACKFILL_RESPONSES,
            status_code=202,
            operation_id=f"backfill{kind.title()}",
            summary=f"Backfill a {kind} over the facts stored before it",
        )
        async def backfill(
            self,
            code: CodePath,
            conn: Connection,
            tenant: CallerTenant,
            caller: Caller,
            dry_run: FromQuery[bool] = False,
            notify: FromQuery[bool] = True,
            as_job: FromQuery[bool] = False,
        ) -> Response[dict[str, Any]]:
            """Award the badge, or complete the challenge, for every participant whose
            stored facts already meet it; `dry_run`: count who would gain what, in the
            answer or, with `as_job` (large environments), in a job's outcomes."""
            return await start_backfill(
                segment,
                code,
                conn,
                tenant,
                caller.key_id,
                dry_run=dry_run,
                notify=notify,
                as_job=as_job,
            )

    return BackfillController


class JobController(Controller):
    """Backfill jobs: progress, outcomes so far, error."""

    path = "/admin"
    tags = ("backfill",)
    security = requires("admin")

    @get("/jobs/{job_id:str}", responses=PROBLEMS)
    async def job(self, job_id: JobPath, conn: Connection, tenant: CallerTenant) -> dict[str, Any]:
        """A backfill job: status, participants done of total, outcomes so far, error."""
        job = await get_job(conn, tenant, job_id)
        if job is None:
            raise ProblemError(404, "job_not_found", f"No job {job_id!r}.")
        return job_body(job)

    @get("/jobs", responses=PROBLEMS)
    async def jobs(self, conn: Connection, tenant: CallerTenant, page: Page) -> dict[str, Any]:
        """The environment's backfill jobs, newest first (`next_cursor` pages on)."""
        return page.answer(
            await list_jobs(conn, tenant, before=page.after, limit=page.limit + 1), "job_id"
        )


backfill_controllers = [
    *(backfill_controller(segment) for segment in BACKFILL_KINDS),
    JobController,
]


async def start_backfill(
    segment: str,
    code: str,
    conn: Conn,
    tenant: Tenant,
    requested_by: str,
    *,
    dry_run: bool,
    notify: bool,
    as_job: bool = False,
) -> Response[dict[str, Any]]:
    """The dry run's answer (200), or the job (a dry one with `as_job`) started (202) or
    already under way (200)."""
    kind = BACKFILL_KINDS[segment]
    row = await get_definition(conn, tenant, kind, code)
    if row is None:
        raise ProblemError(404, "definition_not_found", f"No {segment} definition {code!r}.")
    if row.status != "active":
        raise ProblemError(
            409, "definition_not_active", f"The {segment} definition {code!r} is {row.status}."
        )
    definition = decode_definition(row)
    assert isinstance(definition, Badge | Challenge)
    if dry_run and not as_job:
        target = Target.of(definition)
        outcomes = await dry_run_outcomes(conn, tenant, target, chunk_size=DRY_RUN_CHUNK)
        answer = {"dry_run": True, "kind": segment, "code": code, "outcomes": outcomes.as_dict()}
        return Response(answer, status_code=200)
    job = await create_job(
        conn,
        tenant,
        kind=kind,
        code=code,
        definition_version=row.version,
        notify=notify,
        requested_by=requested_by,
        participants_total=await count_participants(conn, tenant),
        dry_run=dry_run,
    )
    if job is None:  # one is under way: answer it
        under_way = await open_job(conn, tenant, kind, code, dry_run=dry_run)
        assert under_way is not None
        return Response(job_body(under_way), status_code=200)
    return Response(job_body(job), status_code=202)
