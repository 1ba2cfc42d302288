"""Leaderboards: /api/v1/gamify/leaderboards/{code} and the rank of one participant."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated, Any, Literal

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter

from bricqs.mechanics.ruleset import LEADERBOARD_PERIODS, CompiledLeaderboard, RuleSet
from bricqs.mechanics.windows import period_index, period_key, period_start, zone
from bricqs.storage.rankings import criterion_ranking, points_ranking
from bricqs.storage.tenants import Conn, Tenant
from bricqs.web.auth import requires
from bricqs.web.problems import ProblemError
from bricqs_api.context import PROBLEMS, READS, CodePath, ParticipantPath

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


async def _current_ranking(
    conn: Conn, tenant: Tenant, rules: RuleSet, code: str, period: str | None
) -> tuple[str, list[tuple[str, float, datetime]]]:
    """The period asked for (else the leaderboard's own) and its ranking now."""
    board = rules.leaderboards.get(code)
    if board is None:
        raise ProblemError(404, "definition_not_found", f"No active leaderboard {code!r}.")
    chosen = period or board.leaderboard.period
    return chosen, await _ranking(conn, tenant, board, chosen, datetime.now(UTC))


def _score(value: float) -> float | int:
    return int(value) if value == int(value) else value


class LeaderboardController(Controller):
    """Rankings of the tenant's active leaderboards."""

    path = "/leaderboards"
    tags = ("leaderboards",)
    security = requires("read", participant_token=True)
    dependencies = READS

    @get("/{code:str}", responses=PROBLEMS)
    async def leaderboard(
        self,
        code: CodePath,
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
        rules: NamedDependency[RuleSet],
        period: FromQuery[PeriodParam | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 10,
    ) -> dict[str, Any]:
        """Top participants with rank and score; ties go to who reached the score first."""
        chosen, ranking = await _current_ranking(conn, tenant, rules, code, period)
        return {
            "leaderboard": code,
            "period": chosen,
            "total_participants": len(ranking),
            "entries": [
                {"rank": i + 1, "participant_id": pid, "score": _score(score)}
                for i, (pid, score, _) in enumerate(ranking[:limit])
            ],
        }

    @get("/{code:str}/rank/{participant_id:str}", responses=PROBLEMS)
    async def leaderboard_rank(
        self,
        code: CodePath,
        participant_id: ParticipantPath,
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
        rules: NamedDependency[RuleSet],
        period: FromQuery[PeriodParam | None] = None,
    ) -> dict[str, Any]:
        """One participant's rank, score and percentile (share of participants ranked below)."""
        chosen, ranking = await _current_ranking(conn, tenant, rules, code, period)
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
