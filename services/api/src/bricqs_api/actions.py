"""The manual write actions: /api/v1/gamify/points/award, /points/deduct, /badges/award."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from msgspec import Meta

from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.definitions import Code, ParticipantId, Reason
from bricqs.mechanics.manual import (
    IdempotencyConflict,
    InsufficientBalance,
    award_badge,
    change_points,
)
from bricqs.storage.definitions import get_definition
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Conn, Tenant
from bricqs.validation import IDEMPOTENCY_KEY, FieldError
from bricqs.web.auth import requires
from bricqs.web.problems import ProblemError
from bricqs_api.context import PROBLEMS, BoardStandings, CallerTenant, Connection


class PointsChangeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Award or deduct points by hand."""

    participant_id: ParticipantId
    amount: Annotated[int, Meta(gt=0, le=1_000_000_000)]
    reason: Reason = ""
    idempotency_key: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-:.]{1,255}$")] | None = None


class BadgeAwardRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Award a badge by hand."""

    participant_id: ParticipantId
    badge_code: Code


def _key(request: Request[Any, Any, Any], body_key: str | None) -> str | None:
    header = request.headers.get("idempotency-key")
    if header is not None and not IDEMPOTENCY_KEY.fullmatch(header):
        raise ProblemError(
            422,
            "validation_failed",
            "The request is invalid.",
            errors=[FieldError("Idempotency-Key", "invalid format", "invalid_format")],
        )
    return body_key or header


async def _change(
    request: Request[Any, Any, Any],
    data: PointsChangeRequest,
    conn: Conn,
    tenant: Tenant,
    rule_cache: RuleCache,
    sign: int,
    standings: Standings,
) -> dict[str, Any]:
    key = _key(request, data.idempotency_key)
    try:
        async with conn.transaction():
            change = await change_points(
                conn,
                tenant,
                rule_cache,
                data.participant_id,
                sign * data.amount,
                reason=data.reason,
                idempotency_key=key,
                standings=standings,
            )
    except InsufficientBalance as exc:
        raise ProblemError(
            409,
            "insufficient_balance",
            f"The balance is {exc.balance}; cannot deduct {data.amount}.",
            extra={"balance": exc.balance},
        ) from exc
    except IdempotencyConflict as exc:
        raise ProblemError(
            409,
            "idempotency_conflict",
            "This idempotency key was already used with a different change.",
        ) from exc
    return {
        "entry_id": change.entry_id,
        "participant_id": change.participant_id,
        "amount": change.amount,
        "balance": change.balance,
        "duplicate": change.duplicate,
    }


class ManualActionController(Controller):
    """Points and badges given or taken by hand, with the engine's follow-ups."""

    path = "/"
    tags = ("actions",)
    security = requires("write")

    @post("/points/award", responses=PROBLEMS, status_code=200)
    async def award_points(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PointsChangeRequest],
        conn: Connection,
        tenant: CallerTenant,
        rule_cache: NamedDependency[RuleCache],
        standings: BoardStandings,
    ) -> dict[str, Any]:
        """Award points by hand (idempotent with an idempotency key)."""
        return await _change(request, data, conn, tenant, rule_cache, +1, standings)

    @post("/points/deduct", responses=PROBLEMS, status_code=200)
    async def deduct_points(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PointsChangeRequest],
        conn: Connection,
        tenant: CallerTenant,
        rule_cache: NamedDependency[RuleCache],
        standings: BoardStandings,
    ) -> dict[str, Any]:
        """Deduct points atomically; more than the balance is 409 insufficient_balance."""
        return await _change(request, data, conn, tenant, rule_cache, -1, standings)

    @post("/badges/award", responses=PROBLEMS, status_code=200)
    async def award_badge_by_hand(
        self,
        data: JSONBody[BadgeAwardRequest],
        conn: Connection,
        tenant: CallerTenant,
        rule_cache: NamedDependency[RuleCache],
        standings: BoardStandings,
    ) -> dict[str, Any]:
        """Award a badge by hand; awarding it again changes nothing (`awarded: false`)."""
        async with conn.transaction():
            if await get_definition(conn, tenant, "badge", data.badge_code) is None:
                raise ProblemError(404, "definition_not_found", f"No badge {data.badge_code!r}.")
            awarded = await award_badge(
                conn, tenant, rule_cache, data.participant_id, data.badge_code, standings
            )
        return {"participant_id": data.participant_id, "badge": data.badge_code, "awarded": awarded}
