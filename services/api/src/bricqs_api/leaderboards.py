"""Leaderboards: /api/v1/gamify/leaderboards/{code}, one participant's rank, the entries
around them, and a repeating board's runs.

A board's own period is read from its Redis mirror (O(log n + K)); a points board read at
another period (`?period=`) is summed from the ledger on each read, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter

from bricqs.mechanics.ruleset import LEADERBOARD_PERIODS, CompiledLeaderboard, RuleSet
from bricqs.mechanics.standings import (
    NO_GROUP,
    is_built,
    keys_of,
    rebuild,
    reload,
    run_bounds,
    run_of,
    shape,
)
from bricqs.mechanics.windows import period_index, period_start, zone
from bricqs.storage.rankings import board_runs, points_ranking
from bricqs.storage.standings import RunKeys, Standings
from bricqs.storage.tenants import Conn, Tenant
from bricqs.web.auth import requires
from bricqs.web.problems import ProblemError
from bricqs_api.context import PROBLEMS, BoardStandings, CodePath, ParticipantPath

PeriodParam = Literal["all_time", "daily", "weekly", "monthly"]
RunParam = Annotated[int | None, QueryParameter(ge=0, le=100_000_000)]
GroupParam = Annotated[str | None, QueryParameter(pattern=r"^[^\x00-\x1f\x7f]{1,256}$")]


def period_bounds(
    period: str, timezone: str, now: datetime
) -> tuple[datetime | None, datetime | None]:
    """[start, end) in UTC of the current period in `timezone` (None, None for all time)."""
    unit = LEADERBOARD_PERIODS.get(period)
    if unit is None:
        return None, None
    index = period_index(now, unit, timezone)
    tz = zone(timezone)
    start = datetime.combine(period_start(index, unit), datetime.min.time(), tz)
    end = datetime.combine(period_start(index + 1, unit), datetime.min.time(), tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def _score(value: float) -> float | int:
    return int(value) if value == int(value) else value


def _board(rules: RuleSet, code: str) -> CompiledLeaderboard:
    board = rules.leaderboards.get(code)
    if board is None:
        raise ProblemError(404, "definition_not_found", f"No active leaderboard {code!r}.")
    return board


def _group(board: CompiledLeaderboard, group: str | None) -> str:
    if board.leaderboard.group_by is None:
        if group is not None:
            raise ProblemError(422, "not_grouped", "This leaderboard has no groups.")
        return NO_GROUP
    if group is None:
        raise ProblemError(
            422,
            "group_required",
            f"This leaderboard ranks each {board.leaderboard.group_by!r} apart: pass ?group=.",
        )
    return group


def _run(board: CompiledLeaderboard, run: int | None, now: datetime) -> int:
    current = run_of(board, now)
    if run is None:
        return current
    if run > current or (board.leaderboard.period == "all_time" and run != 0):
        raise ProblemError(404, "run_not_found", f"{board.leaderboard.code!r} has no run {run}.")
    return run


class BoardRead:
    """One read of one run of one board: where its mirror is, loaded if it was not."""

    def __init__(
        self,
        conn: Conn,
        standings: Standings,
        tenant: Tenant,
        board: CompiledLeaderboard,
        run: int,
        group: str,
    ) -> None:
        self.conn, self.standings, self.tenant = conn, standings, tenant
        self.board, self.run, self.group = board, run, group

    async def keys(self, run: int | None = None) -> RunKeys:
        """The mirror of `run` (this read's by default), (re)loaded from PostgreSQL when it
        is missing or was loaded for another definition."""
        run = self.run if run is None else run
        keys = keys_of(self.tenant, self.board.leaderboard.code, run)
        if await self.standings.is_ready(keys, shape(self.board)):
            return keys
        now = datetime.now(UTC)
        async with self.conn.transaction():
            if run == run_of(self.board, now) and not await is_built(
                self.conn, self.tenant, self.board
            ):
                await rebuild(self.conn, self.standings, self.tenant, self.board, now)
            else:
                await reload(self.conn, self.standings, self.tenant, self.board, run)
        return keys

    async def previous_ranks(self, participant_ids: Sequence[str]) -> dict[str, int] | None:
        """0-based ranks in the previous run (None for an all-time board)."""
        if self.board.leaderboard.period == "all_time":
            return None
        keys = await self.keys(self.run - 1)
        return await self.standings.ranks_of(keys, self.group, participant_ids)

    async def entries(self, first: int, rows: Sequence[tuple[str, float]]) -> list[dict[str, Any]]:
        """Entries from 0-based rank `first`, with the change since the previous run."""
        previous = await self.previous_ranks([pid for pid, _ in rows])
        entries = []
        for i, (pid, score) in enumerate(rows):
            entry: dict[str, Any] = {
                "rank": first + i + 1,
                "participant_id": pid,
                "score": _score(score),
            }
            if previous is not None:
                entry.update(_change(first + i, previous.get(pid)))
            entries.append(entry)
        return entries

    def head(self, period: str) -> dict[str, Any]:
        """The fields every answer about this run starts with."""
        start, end = run_bounds(self.board, self.run)
        head: dict[str, Any] = {
            "leaderboard": self.board.leaderboard.code,
            "period": period,
            "run": self.run,
        }
        if start is not None:
            head.update(run_starts_at=start, run_ends_at=end)
        if self.group != NO_GROUP:
            head["group"] = self.group
        return head


def _change(rank: int, previous: int | None) -> dict[str, Any]:
    if previous is None:
        return {"previous_rank": None, "change": "new"}
    change = "same" if previous == rank else ("up" if rank < previous else "down")
    return {"previous_rank": previous + 1, "change": change}


async def open_board(
    conn: Conn,
    standings: Standings,
    tenant: Tenant,
    rules: RuleSet,
    code: str,
    run: int | None,
    group: str | None,
) -> BoardRead:
    """A read of one active board's run (the current one when `run` is None) and group:
    404 for an unknown board, 4xx for a wrong run or group (the api's routes and the
    console's page share it)."""
    board = _board(rules, code)
    chosen = _run(board, run, datetime.now(UTC))
    return BoardRead(conn, standings, tenant, board, chosen, _group(board, group))


def _not_ranked(participant_id: str, code: str) -> ProblemError:
    return ProblemError(404, "not_ranked", f"{participant_id!r} has no score on {code!r} yet.")


class LeaderboardController(Controller):
    """Rankings of the tenant's active leaderboards."""

    path = "/leaderboards"
    tags = ("leaderboards",)
    security = requires("read", participant_token=True)
    # On the primary, not DATABASE_READ_URL's standby: reads come from the Redis mirror,
    # and the PostgreSQL work behind one (building or reloading a mirror) writes.

    @get("/{code:str}", responses=PROBLEMS)
    async def leaderboard(
        self,
        code: CodePath,
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
        rules: NamedDependency[RuleSet],
        standings: BoardStandings,
        period: FromQuery[PeriodParam | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 10,
        offset: Annotated[int, QueryParameter(ge=0, le=10_000_000)] = 0,
        run: RunParam = None,
        group: GroupParam = None,
    ) -> dict[str, Any]:
        """Participants from rank `offset` + 1, with rank and score; ties go to who reached
        the score first, then by participant id. `run` reads a past run of a repeating
        board (its final standings); `group` is required on a grouped board."""
        read = await open_board(conn, standings, tenant, rules, code, run, group)
        return await board_page(read, period, limit, offset)

    @get("/{code:str}/rank/{participant_id:str}", responses=PROBLEMS)
    async def leaderboard_rank(
        self,
        code: CodePath,
        participant_id: ParticipantPath,
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
        rules: NamedDependency[RuleSet],
        standings: BoardStandings,
        period: FromQuery[PeriodParam | None] = None,
        run: RunParam = None,
        group: GroupParam = None,
    ) -> dict[str, Any]:
        """One participant's rank, score and percentile (share of participants ranked below)."""
        read = await open_board(conn, standings, tenant, rules, code, run, group)
        return await board_rank(read, participant_id, period)

    @get("/{code:str}/around/{participant_id:str}", responses=PROBLEMS)
    async def leaderboard_around(
        self,
        code: CodePath,
        participant_id: ParticipantPath,
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
        rules: NamedDependency[RuleSet],
        standings: BoardStandings,
        k: Annotated[int, QueryParameter(ge=0, le=100)] = 5,
        run: RunParam = None,
        group: GroupParam = None,
    ) -> dict[str, Any]:
        """The `k` entries above and below a participant, and theirs."""
        read = await open_board(conn, standings, tenant, rules, code, run, group)
        found = await standings.around(await read.keys(), read.group, participant_id, k)
        if found is None:
            raise _not_ranked(participant_id, code)
        first, rows, total = found
        return {
            **read.head(read.board.leaderboard.period),
            "participant_id": participant_id,
            "total_participants": total,
            "entries": await read.entries(first, rows),
        }

    @get("/{code:str}/runs", responses=PROBLEMS)
    async def leaderboard_runs(
        self,
        code: CodePath,
        conn: NamedDependency[Conn],
        tenant: NamedDependency[Tenant],
        rules: NamedDependency[RuleSet],
        before: RunParam = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 20,
    ) -> dict[str, Any]:
        """A board's runs with standings, newest first; `before` pages back."""
        board = _board(rules, code)
        current = run_of(board, datetime.now(UTC))
        runs = await board_runs(conn, tenant, code, before, limit)
        return {
            "leaderboard": code,
            "period": board.leaderboard.period,
            "current_run": current,
            "runs": [
                {"run": run, "starts_at": start, "ends_at": end, "finished": run < current}
                for run, start, end in runs
            ],
            "next_before": runs[-1][0] if len(runs) == limit else None,
        }


async def board_page(
    read: BoardRead, period: str | None, limit: int, offset: int
) -> dict[str, Any]:
    """The answer of `GET /leaderboards/{code}`: entries from rank `offset` + 1 (the api's
    route and the console's page share it)."""
    definition = read.board.leaderboard
    if period is not None and period != definition.period:
        return await _other_period(read.conn, read.tenant, read, period, limit, offset)
    keys = await read.keys()
    total, rows = await read.standings.top(keys, read.group, offset, limit)
    return {
        **read.head(definition.period),
        "total_participants": total,
        "offset": offset,
        "next_offset": offset + limit if offset + limit < total else None,
        "entries": await read.entries(offset, rows),
    }


async def board_rank(read: BoardRead, participant_id: str, period: str | None) -> dict[str, Any]:
    """The answer of `GET /leaderboards/{code}/rank/{participant_id}`; 404 `not_ranked`."""
    definition = read.board.leaderboard
    code = definition.code
    if period is not None and period != definition.period:
        ranking = await _period_ranking(read.conn, read.tenant, read, period)
        found = next((i for i, (pid, _) in enumerate(ranking) if pid == participant_id), None)
        if found is None:
            raise _not_ranked(participant_id, code)
        rank, score, total = found, ranking[found][1], len(ranking)
        head = {**read.head(period), "run": None}
    else:
        ranked = await read.standings.rank(await read.keys(), read.group, participant_id)
        if ranked is None:
            raise _not_ranked(participant_id, code)
        rank, score, total = ranked
        head = read.head(definition.period)
    answer = {
        **head,
        "participant_id": participant_id,
        "rank": rank + 1,
        "score": _score(score),
        "total_participants": total,
        "percentile": round(100.0 * (total - rank - 1) / total, 2),
    }
    if (
        head["run"] is not None
        and (previous := await read.previous_ranks([participant_id])) is not None
    ):
        answer.update(_change(rank, previous.get(participant_id)))
    return answer


async def _period_ranking(
    conn: Conn, tenant: Tenant, read: BoardRead, period: str
) -> list[tuple[str, float]]:
    """A points board's ranking at a period other than its own, summed from the ledger."""
    definition = read.board.leaderboard
    if definition.metric != "points" or read.group != NO_GROUP:
        raise ProblemError(
            422,
            "unsupported_period",
            f"This leaderboard is kept per {definition.period} only.",
        )
    since, until = period_bounds(period, definition.timezone, datetime.now(UTC))
    return [(p, float(s)) for p, s, _ in await points_ranking(conn, tenant, since, until)]


async def _other_period(
    conn: Conn, tenant: Tenant, read: BoardRead, period: str, limit: int, offset: int
) -> dict[str, Any]:
    ranking = await _period_ranking(conn, tenant, read, period)
    return {
        "leaderboard": read.board.leaderboard.code,
        "period": period,
        "total_participants": len(ranking),
        "offset": offset,
        "next_offset": offset + limit if offset + limit < len(ranking) else None,
        "entries": [
            {"rank": offset + i + 1, "participant_id": pid, "score": _score(score)}
            for i, (pid, score) in enumerate(ranking[offset : offset + limit])
        ],
    }
