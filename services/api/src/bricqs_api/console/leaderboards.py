"""Leaderboards: any active board and period, paged, and where one participant stands.

The page and the rank come from the api's leaderboard reads (`open_board`, `board_page`,
`board_rank`): the one seam between this page and how rankings are kept."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter

from bricqs.storage.tenants import Conn
from bricqs.web.problems import ProblemError
from bricqs_api.console.participants import ParticipantQuery
from bricqs_api.console.rendering import page
from bricqs_api.console.session import SignedIn
from bricqs_api.context import ApiClients, BoardStandings
from bricqs_api.leaderboards import BoardRead, PeriodParam, board_page, board_rank, open_board

PAGE_SIZE = 50
BoardQuery = Annotated[str | None, QueryParameter(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]
PageNumber = Annotated[int, QueryParameter(name="page", ge=1, le=100_000)]


class LeaderboardPages(Controller):
    """One page of one leaderboard."""

    path = "/leaderboards"
    include_in_schema = False

    @get("/")
    async def leaderboard(
        self,
        request: Request[Any, Any, Any],
        user: SignedIn,
        conn: NamedDependency[Conn],
        clients: NamedDependency[ApiClients],
        standings: BoardStandings,
        board: BoardQuery = None,
        period: FromQuery[PeriodParam | None] = None,
        page_number: PageNumber = 1,
        find: ParticipantQuery = None,
    ) -> Response[str]:
        """The board asked for (else the first), a page of its ranking, and the rank of
        the participant in `find`."""
        rules = await clients.rules(conn, user.tenant)
        boards = sorted(rules.leaderboards)
        board = board or (boards[0] if boards else None)
        context: dict[str, Any] = {
            "user": user,
            "boards": boards,
            "board": board,
            "periods": ["all_time", "daily", "weekly", "monthly"],
            "period": period,
            "entries": [],
            "total": 0,
            "page_number": page_number,
            "pages": 0,
            "find": find or "",
            "found": None,
            "error": None,
        }
        if board is not None:
            start = (page_number - 1) * PAGE_SIZE
            try:
                read = await open_board(conn, standings, user.tenant, rules, board, None, None)
                answer = await board_page(read, period, PAGE_SIZE, start)
                found = await _rank_of(read, find, period) if find else None
            except ProblemError as exc:
                return page(
                    request,
                    "leaderboards.html",
                    status_code=exc.status,
                    **context | {"error": exc.detail},
                )
            total = answer["total_participants"]
            context |= {
                "period": answer["period"],
                "total": total,
                "pages": -(-total // PAGE_SIZE),
                "entries": [
                    (e["rank"], e["participant_id"], e["score"]) for e in answer["entries"]
                ],
                "found": found,
            }
        return page(request, "leaderboards.html", **context)


async def _rank_of(
    read: BoardRead, participant_id: str, period: str | None
) -> tuple[int, float] | bool:
    """(rank, score) of the participant, or False when they have no score."""
    try:
        ranked = await board_rank(read, participant_id, period)
    except ProblemError as exc:
        if exc.status == 404:
            return False
        raise
    return ranked["rank"], ranked["score"]
