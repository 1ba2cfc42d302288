"""Leaderboards (/api/v1/gamify/leaderboards/…) and the event catalog (/api/v1/events/catalog)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated, Any, Literal

from litestar import Router, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter

from bricqs.mechanics.ruleset import LEADERBOARD_PERIODS, CompiledLeaderboard
from bricqs.mechanics.windows import period_index, period_key, period_start, zone
from bricqs.storage.rankings import criterion_ranking, points_ranking
from bricqs.storage.tenants import Conn, Tenant
from bricqs.web.problems import ProblemError
from bricqs_api.context import PROBLEMS, ApiContext, CodePath, ParticipantPath

PeriodParam = Literal["all_time", "daily", "weekly", "monthly"]


def period_bounds(
    period: str, timezone: str, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """[start, end) in UTC of the current period in `timezone` (None, None for all time)."""
    unit = LEADERBOARD_PERIODS.get(period)
    if unit is None:
        return None, None
    index = period_index(now, unit, timezone)
    tz = zone(timezone)
    start = datetime.combine(period_start(index, unit), time(), tz)
    end = datetime.combine(period_start(index + 1, unit), time(), tz)
    return start.astimezone(UTC), end.astimezone(UTC)


async def _ranking(
    conn: Conn, tenant: Tenant, board: CompiledLeaderboard, period: str, now: datetime
) -> list[tuple[str, float, datetime]]:
    definition = board.leaderboard
    if definition.metric == "points":
        since, until = period_bounds(period, definition.timezone, now)
        return [(p, float(s), r) for p, s, r in await points_ranking(conn, tenant, since, until)]
    if period != definition.period:
        raise ProblemError(
            422,
            "unsupported_period",
            f"This criterion leaderboard is kept per {definition.period} only.",
        )
    assert board.criterion is not None
    unit = LEADERBOARD_PERIODS.get(period)
    bucket = period_key(now, unit, definition.timezone) if unit else "all"
    return await criterion_ranking(
        conn, tenant, board.criterion.criterion_id, bucket, board.criterion.aggregate
    )


async def _board(ctx: ApiContext, conn: Conn, tenant: Tenant, code: str) -> CompiledLeaderboard:
    rules = await ctx.rules(conn, tenant)
    board = rules.leaderboards.get(code)
    if board is None:
        raise ProblemError(404, "definition_not_found", f"No active leaderboard {code!r}.")
    return board


def _score(value: float) -> float | int:
    return int(value) if value == int(value) else value


@get("/leaderboards/{code:str}", responses=PROBLEMS, tags=["leaderboards"])
async def leaderboard(
    code: CodePath,
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
    period: FromQuery[PeriodParam | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 10,
) -> dict[str, Any]:
    """Top participants with rank and score; ties go to who reached the score first."""
    now = datetime.now(UTC)
    async with ctx.pool.connection() as conn:
        board = await _board(ctx, conn, tenant, code)
        chosen = period or board.leaderboard.period
        ranking = await _ranking(conn, tenant, board, chosen, now)
    return {
        "leaderboard": code,
        "period": chosen,
        "total_participants": len(ranking),
        "entries": [
            {"rank": i + 1, "participant_id": pid, "score": _score(score)}
            for i, (pid, score, _) in enumerate(ranking[:limit])
        ],
    }


@get(
    "/leaderboards/{code:str}/rank/{participant_id:str}", responses=PROBLEMS, tags=["leaderboards"]
)
async def leaderboard_rank(
    code: CodePath,
    participant_id: ParticipantPath,
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
    period: FromQuery[PeriodParam | None] = None,
) -> dict[str, Any]:
    """One participant's rank, score and percentile (share of participants ranked below)."""
    now = datetime.now(UTC)
    async with ctx.pool.connection() as conn:
        board = await _board(ctx, conn, tenant, code)
        chosen = period or board.leaderboard.period
        ranking = await _ranking(conn, tenant, board, chosen, now)
    for i, (pid, score, _) in enumerate(ranking):
        if pid == participant_id:
            total = len(ranking)
            return {
                "leaderboard": code,
                "period": chosen,
                "participant_id": participant_id,
                "rank": i + 1,
                "score": _score(score),
                "total_participants": total,
                "percentile": round(100.0 * (total - i - 1) / total, 2),
            }
    raise ProblemError(404, "not_ranked", f"{participant_id!r} has no score on {code!r} yet.")


@get("/events/catalog", responses=PROBLEMS, tags=["catalog"])
async def event_catalog(
    ctx: NamedDependency[ApiContext], tenant: NamedDependency[Tenant]
) -> dict[str, Any]:
    """Every event name seen, with counts and the JSON types seen for each property."""
    async with ctx.pool.connection() as conn:
        events = await (
            await conn.execute(
                "SELECT event_name, event_count, first_seen_at, last_seen_at FROM event_catalog"
                " WHERE project_id = %s AND environment = %s ORDER BY event_name",
                (tenant.project_id, tenant.environment),
            )
        ).fetchall()
        properties = await (
            await conn.execute(
                "SELECT event_name, property_key, array_agg(json_type ORDER BY json_type)"
                " FROM event_catalog_properties WHERE project_id = %s AND environment = %s"
                " GROUP BY 1, 2 ORDER BY 1, 2",
                (tenant.project_id, tenant.environment),
            )
        ).fetchall()
    by_event: dict[str, dict[str, list[str]]] = {}
    for name, key, types in properties:
        by_event.setdefault(name, {})[key] = list(types)
    return {
        "items": [
            {
                "event_name": name,
                "count": count,
                "first_seen_at": first,
                "last_seen_at": last,
                "properties": by_event.get(name, {}),
            }
            for name, count, first, last in events
        ]
    }


gamify_router = Router(path="/", route_handlers=[leaderboard, leaderboard_rank])
catalog_router = Router(path="/", route_handlers=[event_catalog])
