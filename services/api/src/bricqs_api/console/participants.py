"""Participants: find one by id, read everything it has, award or deduct points and award
badges by hand (each after a confirmation step), through the api's manual actions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Redirect

from bricqs.ids import ulid
from bricqs.mechanics.manual import (
    IdempotencyConflict,
    InsufficientBalance,
    award_badge,
    change_points,
)
from bricqs.storage.definitions import get_definition
from bricqs.storage.facts import list_facts
from bricqs.storage.ledger import list_ledger
from bricqs.storage.tenants import Conn
from bricqs_api.console.rendering import page
from bricqs_api.console.session import ConsoleUser, SignedIn, require
from bricqs_api.console.signin import Form
from bricqs_api.context import ApiClients, Cursor, ParticipantPath, ParticipantView

LEDGER_PAGE = 20
RECENT_FACTS = 20
ParticipantQuery = Annotated[str | None, QueryParameter(pattern=r"^[^\x00-\x1f\x7f]{0,255}$")]


def participant_url(participant_id: str) -> str:
    """The console page of a participant."""
    return "/console/participants/" + quote(participant_id, safe="")


class ParticipantPages(Controller):
    """One participant's state, history and manual actions."""

    path = "/participants"
    include_in_schema = False

    @get("/")
    async def find(
        self, request: Request[Any, Any, Any], user: SignedIn, q: ParticipantQuery = None
    ) -> Response[Any]:
        """The search form; a searched id opens that participant's page."""
        if q and q.strip():
            return Redirect(participant_url(q.strip()), status_code=303)
        return page(request, "participant_search.html", user=user)

    @get("/{participant_id:str}")
    async def participant(
        self,
        request: Request[Any, Any, Any],
        participant_id: ParticipantPath,
        user: SignedIn,
        conn: NamedDependency[Conn],
        clients: NamedDependency[ApiClients],
        cursor: Cursor = None,
    ) -> Response[str]:
        """Points with the ledger (cursor-paged), badges, challenges, streaks, tiers and
        the most recent facts, as the api's participant reads give them."""
        return page(
            request,
            "participant.html",
            **await _participant_context(conn, clients, user, participant_id, cursor),
        )

    @post("/{participant_id:str}/points", status_code=200)
    async def change_points_by_hand(
        self,
        request: Request[Any, Any, Any],
        participant_id: ParticipantPath,
        data: Annotated[dict[str, str], Form],
        user: SignedIn,
        conn: NamedDependency[Conn],
        clients: NamedDependency[ApiClients],
    ) -> Response[Any]:
        """First post: the confirmation page; confirmed post: the change, made once (the
        confirmation carries its idempotency key)."""
        require(user, "write")
        change = PointsForm.read(data)
        if isinstance(change, str):
            error: str | None = change
        elif data.get("confirmed") != "yes":
            return page(
                request,
                "confirm_points.html",
                user=user,
                participant_id=participant_id,
                url=participant_url(participant_id),
                change=change,
                idempotency_key="console:" + ulid(),
            )
        else:
            key = data.get("idempotency_key") or None
            error = await _change_points(conn, clients, user, participant_id, change, key)
        if error is None:
            return Redirect(participant_url(participant_id), status_code=303)
        return await _participant_page(request, conn, clients, user, participant_id, error=error)

    @post("/{participant_id:str}/badges", status_code=200)
    async def award_badge_by_hand(
        self,
        request: Request[Any, Any, Any],
        participant_id: ParticipantPath,
        data: Annotated[dict[str, str], Form],
        user: SignedIn,
        conn: NamedDependency[Conn],
        clients: NamedDependency[ApiClients],
    ) -> Response[Any]:
        """First post: the confirmation page; confirmed post: the badge (once)."""
        require(user, "write")
        code = data.get("badge_code", "")
        if await get_definition(conn, user.tenant, "badge", code) is None:
            return await _participant_page(
                request, conn, clients, user, participant_id, error=f"No badge {code!r}."
            )
        if data.get("confirmed") != "yes":
            return page(
                request,
                "confirm_badge.html",
                user=user,
                participant_id=participant_id,
                url=participant_url(participant_id),
                badge_code=code,
            )
        async with conn.transaction():
            await award_badge(conn, user.tenant, clients.rules, participant_id, code)
        return Redirect(participant_url(participant_id), status_code=303)


@dataclass(frozen=True)
class PointsForm:
    """A change of points asked for on the participant page."""

    direction: Literal["award", "deduct"]
    amount: int
    reason: str

    @classmethod
    def read(cls, data: dict[str, str]) -> PointsForm | str:
        """The change the form asks for, or why it is not one."""
        try:
            amount = int(data.get("amount", ""))
        except ValueError:
            amount = 0
        if not 0 < amount <= 1_000_000_000:
            return "The amount must be a whole number from 1 to 1,000,000,000."
        direction: Literal["award", "deduct"] = (
            "deduct" if data.get("direction") == "deduct" else "award"
        )
        return cls(direction, amount, data.get("reason", "")[:500])


async def _change_points(
    conn: Conn,
    clients: ApiClients,
    user: ConsoleUser,
    participant_id: str,
    change: PointsForm,
    idempotency_key: str | None,
) -> str | None:
    """Make the change as the api's manual action does; why not, when it cannot be."""
    amount = change.amount if change.direction == "award" else -change.amount
    try:
        async with conn.transaction():
            await change_points(
                conn,
                user.tenant,
                clients.rules,
                participant_id,
                amount,
                reason=change.reason,
                idempotency_key=idempotency_key,
            )
    except InsufficientBalance as exc:
        return f"The balance is {exc.balance}; cannot deduct {change.amount}."
    except IdempotencyConflict:
        return "This confirmation was already used for another change."
    return None


async def _participant_context(
    conn: Conn, clients: ApiClients, user: ConsoleUser, participant_id: str, cursor: str | None
) -> dict[str, Any]:
    tenant = user.tenant
    rules = await clients.rules(conn, tenant)
    view = ParticipantView(conn, tenant, rules, participant_id, datetime.now(UTC))
    ledger = await list_ledger(conn, tenant, participant_id, after=cursor, limit=LEDGER_PAGE + 1)
    facts = await list_facts(
        conn, tenant, participant_id, after=None, fact_type=None, limit=RECENT_FACTS
    )
    return {
        "user": user,
        "participant_id": participant_id,
        "url": participant_url(participant_id),
        "points": await view.points(),
        "ledger": ledger[:LEDGER_PAGE],
        "next_cursor": ledger[LEDGER_PAGE - 1].entry_id if len(ledger) > LEDGER_PAGE else None,
        "cursor": cursor,
        "badges": await view.badges(),
        "badge_codes": sorted(rules.badges),
        "challenges": await view.challenges(),
        "streaks": await view.streaks(),
        "tiers": await view.tiers(),
        "facts": facts,
        "error": None,
    }


async def _participant_page(
    request: Request[Any, Any, Any],
    conn: Conn,
    clients: ApiClients,
    user: ConsoleUser,
    participant_id: str,
    *,
    error: str,
) -> Response[str]:
    """The participant page again, with why the action did not happen."""
    context = await _participant_context(conn, clients, user, participant_id, None)
    return page(request, "participant.html", status_code=422, **context | {"error": error})
