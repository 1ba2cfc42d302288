"""Leaderboards: any active board and period, paged, and where one participant stands.

The ranking comes from the api's leaderboard read, the one seam between this page and
how rankings are kept."""

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
from bricqs_api.context import ApiClients

# The api's own ranking read (private to it, but in this package): the seam to keep thin.
from bricqs_api.leaderboards import PeriodParam
from bricqs_api.leaderboards import _current_ranking as current_ranking

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
            try:
                chosen, ranking = await current_ranking(conn, user.tenant, rules, board, period)
            except ProblemError as exc:
                return page(
                    request,
                    "leaderboards.html",
                    status_code=exc.status,
                    **context | {"error": exc.detail},
                )
            start = (page_number - 1) * PAGE_SIZE
            context |= {
                "period": chosen,
                "total": len(ranking),
                "pages": -(-len(ranking) // PAGE_SIZE),
                "entries": [
                    (start + i + 1, pid, score)
                    for i, (pid, score, _) in enumerate(ranking[start : start + PAGE_SIZE])
                ],
            }
            if find:
                context["found"] = next(
                    ((i + 1, score) for i, (pid, score, _) in enumerate(ranking) if pid == find),
                    False,
                )
        return page(request, "leaderboards.html", **context)
