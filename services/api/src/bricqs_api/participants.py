"""Participant state and the manual actions: /api/v1/gamify/participants/…, /points/award,
/points/deduct, /badges/award."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter
from msgspec import Meta

from bricqs.mechanics import state
from bricqs.mechanics.definitions import _timezone_errors
from bricqs.mechanics.manual import (
    IdempotencyConflict,
    InsufficientBalance,
    award_badge,
    change_points,
)
from bricqs.storage.definitions import get_definition
from bricqs.storage.ledger import list_ledger
from bricqs.storage.tenants import Tenant
from bricqs.validation import IDEMPOTENCY_KEY, FieldError
from bricqs.web.problems import ProblemError
from bricqs_api.context import PROBLEMS, ApiContext, Cursor, FactTypeQuery, ParticipantPath

ParticipantId = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
Limit = Annotated[int, QueryParameter(ge=1, le=200)]


class PointsChangeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Award or deduct points by hand."""

    participant_id: ParticipantId
    amount: Annotated[int, Meta(gt=0, le=1_000_000_000)]
    reason: Annotated[str, Meta(max_length=500)] = ""
    idempotency_key: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-:.]{1,255}$")] | None = None


class BadgeAwardRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Award a badge by hand."""

    participant_id: ParticipantId
    badge_code: str


class ParticipantUpdate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Attributes of a participant the mechanics use."""

    timezone: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


@get("/participants/{participant_id:str}/state", responses=PROBLEMS, tags=["participants"])
async def participant_state(
    participant_id: ParticipantPath,
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
) -> dict[str, Any]:
    """Points, badges, challenges, streaks and tiers in one read."""
    now = _now()
    async with ctx.pool.connection() as conn:
        rules = await ctx.rules(conn, tenant)
        return {
            "participant_id": participant_id,
            "points": await state.points_state(conn, tenant, participant_id),
            "badges": await state.badges_state(conn, tenant, rules, participant_id, now),
            "challenges": await state.challenges_state(conn, tenant, rules, participant_id, now),
            "streaks": await state.streaks_state(conn, tenant, rules, participant_id, now),
            "tiers": await state.tiers_state(conn, tenant, rules, participant_id),
        }


@get("/participants/{participant_id:str}/points", responses=PROBLEMS, tags=["participants"])
async def participant_points(
    participant_id: ParticipantPath,
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
) -> dict[str, Any]:
    """Balance, total earned and total spent."""
    async with ctx.pool.connection() as conn:
        return {
            "participant_id": participant_id,
            **await state.points_state(conn, tenant, participant_id),
        }


@get(
    "/participants/{participant_id:str}/points/transactions",
    responses=PROBLEMS,
    tags=["participants"],
)
async def participant_transactions(
    participant_id: ParticipantPath,
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
    cursor: Cursor = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """The points ledger, newest first; pass `next_cursor` back as `cursor` for more."""
    async with ctx.pool.connection() as conn:
        rows = await list_ledger(conn, tenant, participant_id, after=cursor, limit=limit + 1)
    items = [
        {
            "entry_id": r[0],
            "amount": r[1],
            "kind": r[2],
            "source": r[3],
            "fact_id": r[4],
            "reason": r[5],
            "occurred_at": r[6],
            "created_at": r[7],
        }
        for r in rows[:limit]
    ]
    return {"items": items, "next_cursor": items[-1]["entry_id"] if len(rows) > limit else None}


@get("/participants/{participant_id:str}/badges", responses=PROBLEMS, tags=["participants"])
async def participant_badges(
    participant_id: ParticipantPath,
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
) -> dict[str, Any]:
    """Earned badges, and the not-yet-earned ones with progress."""
    async with ctx.pool.connection() as conn:
        rules = await ctx.rules(conn, tenant)
        return await state.badges_state(conn, tenant, rules, participant_id, _now())


@get("/participants/{participant_id:str}/challenges", responses=PROBLEMS, tags=["participants"])
async def participant_challenges(
    participant_id: ParticipantPath,
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
) -> dict[str, Any]:
    """Progress per objective of every active challenge."""
    async with ctx.pool.connection() as conn:
        rules = await ctx.rules(conn, tenant)
        return {"items": await state.challenges_state(conn, tenant, rules, participant_id, _now())}


@get("/participants/{participant_id:str}/streaks", responses=PROBLEMS, tags=["participants"])
async def participant_streaks(
    participant_id: ParticipantPath,
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
) -> dict[str, Any]:
    """Current and longest runs, with the at-risk flag."""
    async with ctx.pool.connection() as conn:
        rules = await ctx.rules(conn, tenant)
        return {"items": await state.streaks_state(conn, tenant, rules, participant_id, _now())}


@get("/participants/{participant_id:str}/tier", responses=PROBLEMS, tags=["participants"])
async def participant_tier(
    participant_id: ParticipantPath,
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
) -> dict[str, Any]:
    """Level on each tier ladder and points to the next."""
    async with ctx.pool.connection() as conn:
        rules = await ctx.rules(conn, tenant)
        return {"items": await state.tiers_state(conn, tenant, rules, participant_id)}


@get("/participants/{participant_id:str}/facts", responses=PROBLEMS, tags=["participants"])
async def participant_facts(
    participant_id: ParticipantPath,
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
    cursor: Cursor = None,
    limit: Limit = 50,
    fact_type: FactTypeQuery = None,
) -> dict[str, Any]:
    """The participant's facts (custom and system), newest first, cursor-paginated."""
    async with ctx.pool.connection() as conn:
        result = await conn.execute(
            "SELECT fact_id, fact_type, event_id, properties, occurred_at, created_at FROM facts"
            " WHERE project_id = %s AND environment = %s AND participant_id = %s"
            " AND (%s::text IS NULL OR fact_id < %s) AND (%s::text IS NULL OR fact_type = %s)"
            " ORDER BY fact_id DESC LIMIT %s",
            (
                tenant.project_id,
                tenant.environment,
                participant_id,
                cursor,
                cursor,
                fact_type,
                fact_type,
                limit + 1,
            ),
        )
        rows = await result.fetchall()
    items = [
        {
            "fact_id": r[0],
            "fact_type": r[1],
            "event_id": r[2],
            "properties": r[3],
            "occurred_at": r[4],
            "created_at": r[5],
        }
        for r in rows[:limit]
    ]
    return {"items": items, "next_cursor": items[-1]["fact_id"] if len(rows) > limit else None}


@patch("/participants/{participant_id:str}", responses=PROBLEMS, tags=["participants"])
async def update_participant(
    participant_id: ParticipantPath,
    data: JSONBody[ParticipantUpdate],
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
) -> dict[str, Any]:
    """Set attributes (the IANA `timezone` that streaks with timezone "participant" use)."""
    if data.timezone is not None:
        errors = _timezone_errors(data.timezone, "timezone")
        if errors:
            raise ProblemError(422, "validation_failed", "The update is invalid.", errors=errors)
    attributes = msgspec.json.encode(
        {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
    ).decode()
    async with ctx.pool.connection() as conn:
        result = await conn.execute(
            "INSERT INTO participants AS p (project_id, environment, participant_id,"
            " first_seen_at, last_seen_at, event_count, attributes)"
            " VALUES (%s, %s, %s, now(), now(), 0, %s::jsonb)"
            " ON CONFLICT (project_id, environment, participant_id)"
            " DO UPDATE SET attributes = p.attributes || EXCLUDED.attributes"
            " RETURNING attributes",
            (tenant.project_id, tenant.environment, participant_id, attributes),
        )
        row = await result.fetchone()
    assert row is not None
    return {"participant_id": participant_id, "attributes": row[0]}


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
    data: JSONBody[PointsChangeRequest],
    ctx: ApiContext,
    tenant: Tenant,
    sign: int,
) -> dict[str, Any]:
    key = _key(request, data.idempotency_key)
    try:
        async with ctx.pool.connection() as conn, conn.transaction():
            change = await change_points(
                conn,
                tenant,
                ctx.rules,
                data.participant_id,
                sign * data.amount,
                reason=data.reason,
                idempotency_key=key,
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


@post("/points/award", responses=PROBLEMS, status_code=200, tags=["actions"])
async def award_points(
    request: Request[Any, Any, Any],
    data: JSONBody[PointsChangeRequest],
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
) -> dict[str, Any]:
    """Award points by hand (idempotent with an idempotency key)."""
    return await _change(request, data, ctx, tenant, +1)


@post("/points/deduct", responses=PROBLEMS, status_code=200, tags=["actions"])
async def deduct_points(
    request: Request[Any, Any, Any],
    data: JSONBody[PointsChangeRequest],
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
) -> dict[str, Any]:
    """Deduct points atomically; more than the balance is 409 insufficient_balance."""
    return await _change(request, data, ctx, tenant, -1)


@post("/badges/award", responses=PROBLEMS, status_code=200, tags=["actions"])
async def award_badge_by_hand(
    data: JSONBody[BadgeAwardRequest],
    ctx: NamedDependency[ApiContext],
    tenant: NamedDependency[Tenant],
) -> dict[str, Any]:
    """Award a badge by hand; awarding it again changes nothing (`awarded: false`)."""
    async with ctx.pool.connection() as conn, conn.transaction():
        if await get_definition(conn, tenant, "badge", data.badge_code) is None:
            raise ProblemError(404, "definition_not_found", f"No badge {data.badge_code!r}.")
        awarded = await award_badge(conn, tenant, ctx.rules, data.participant_id, data.badge_code)
    return {"participant_id": data.participant_id, "badge": data.badge_code, "awarded": awarded}


participant_router = Router(
    path="/",
    route_handlers=[
        participant_state,
        participant_points,
        participant_transactions,
        participant_badges,
        participant_challenges,
        participant_streaks,
        participant_tier,
        participant_facts,
        update_participant,
        award_points,
        deduct_points,
        award_badge_by_hand,
    ],
)
