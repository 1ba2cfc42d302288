"""The rewards catalogue: admin definitions and code pools under /api/v1/gamify/admin,
the catalogue and claims under /api/v1/gamify/rewards, and each participant's claims.

Rewards have their own admin controller instead of a kind of the definitions API: a
definition is a rule the engine compiles, a reward is inventory that claims take under
row locks (see the migration `0014_rewards.sql`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromQuery, HeaderParameter, JSONBody, PathParameter, QueryParameter
from msgspec import Meta

from bricqs.mechanics import rewards
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.definitions import ParticipantId, Reason
from bricqs.mechanics.rewards import RewardDefinition
from bricqs.storage import rewards as store
from bricqs.storage.balances import read_balance
from bricqs.storage.rewards import ClaimRow, RewardRow
from bricqs.validation import FieldError
from bricqs.web.auth import check_participant, requires
from bricqs.web.problems import ProblemError
from bricqs_api.context import (
    PROBLEMS,
    READS,
    BoardStandings,
    Caller,
    CallerTenant,
    CodePath,
    Connection,
    Page,
    ParticipantPath,
)

IdempotencyKey = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-:.]{1,255}$")]
IdempotencyHeader = Annotated[
    IdempotencyKey | None,
    HeaderParameter(name="Idempotency-Key", pattern=r"^[A-Za-z0-9_\-:.]{1,255}$"),
]
ParticipantQuery = Annotated[str | None, QueryParameter(pattern=r"^[^\x00-\x1f\x7f]{1,255}$")]
ClaimPath = Annotated[str, PathParameter(pattern=r"^clm_[0-9A-Z]{26}$")]
MAX_CODES_PER_UPLOAD = 1000


class ClaimRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Claim a reward for a participant."""

    participant_id: ParticipantId
    idempotency_key: IdempotencyKey | None = None
    """Or the `Idempotency-Key` header: a repeat answers the first claim."""


class CodeUpload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Codes to add to a reward's pool; codes it holds already are skipped."""

    codes: Annotated[
        list[Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f]{1,200}$")]],
        Meta(min_length=1, max_length=MAX_CODES_PER_UPLOAD),
    ]


class CancelRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Cancel a claim: its points come back, and its code returns to the pool or is voided."""

    code_action: Literal["return", "void"] = "return"
    reason: Reason = ""


def reward_body(row: RewardRow) -> dict[str, Any]:
    """A reward as the admin API shows it: its definition, inventory, version and times."""
    return {
        **row.body,
        "status": row.status,
        "remaining": row.remaining,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def claim_body(claim: ClaimRow) -> dict[str, Any]:
    """A claim as the API shows it."""
    return claim._asdict()


def _found(row: RewardRow | None, code: str) -> RewardRow:
    if row is None:
        raise ProblemError(404, "reward_not_found", f"No reward with code {code!r}.")
    return row


def _checked(reward: RewardDefinition) -> str:
    """The JSON to store of a valid reward; 422 with field errors otherwise."""
    errors = rewards.reward_errors(reward)
    if errors:
        raise ProblemError(422, "validation_failed", "The reward is invalid.", errors=errors)
    return msgspec.json.encode(reward).decode()


class RewardAdminController(Controller):
    """Rewards (create, list, get, replace, archive), their code pools, and cancelling claims."""

    path = "/admin"
    tags = ("rewards",)
    security = requires("admin")

    @post("/rewards", responses=PROBLEMS, status_code=201)
    async def create_reward(
        self, data: JSONBody[RewardDefinition], conn: Connection, tenant: CallerTenant
    ) -> dict[str, Any]:
        """Create a reward; a taken code is 409 `reward_exists`."""
        body = _checked(data)
        row = await store.create_reward(
            conn, tenant, data.code, data.status, data.stock, data.code_pool, body
        )
        if row is None:
            raise ProblemError(409, "reward_exists", f"A reward {data.code!r} exists.")
        return reward_body(row)

    @get("/rewards", responses=PROBLEMS)
    async def list_rewards(
        self, conn: Connection, tenant: CallerTenant, include_archived: FromQuery[bool] = False
    ) -> dict[str, Any]:
        """Every reward, by code, with what each has left."""
        rows = await store.list_rewards(conn, tenant, include_archived=include_archived)
        return {"items": [reward_body(row) for row in rows]}

    @get("/rewards/{code:str}", responses=PROBLEMS)
    async def get_reward(
        self, code: CodePath, conn: Connection, tenant: CallerTenant
    ) -> dict[str, Any]:
        """One reward; a code pool's counts by state under `codes`."""
        row = _found(await store.get_reward(conn, tenant, code), code)
        body = reward_body(row)
        if row.code_pool:
            body["codes"] = await store.code_counts(conn, tenant, code)
        return body

    @put("/rewards/{code:str}", responses=PROBLEMS)
    async def update_reward(
        self,
        code: CodePath,
        data: JSONBody[RewardDefinition],
        conn: Connection,
        tenant: CallerTenant,
    ) -> dict[str, Any]:
        """Replace a reward's definition; its claims and codes stay. `stock` is the total:
        raising it restocks. `code` and `code_pool` cannot change."""
        current = _found(await store.get_reward(conn, tenant, code), code)
        for name, now, then in (
            ("code", data.code, code),
            ("code_pool", data.code_pool, current.code_pool),
        ):
            if now != then:
                raise ProblemError(
                    422,
                    "validation_failed",
                    f"The {name} cannot change.",
                    errors=[FieldError(name, f"must be {then!r}", "immutable")],
                )
        try:
            row = await store.update_reward(
                conn, tenant, code, data.status, data.stock, _checked(data)
            )
        except Exception as exc:
            if store.is_oversold(exc):
                raise ProblemError(
                    409,
                    "stock_below_claimed",
                    "More are claimed than this stock; cancel claims first.",
                ) from exc
            raise
        return reward_body(_found(row, code))

    @delete("/rewards/{code:str}", responses=PROBLEMS, status_code=200)
    async def archive_reward(
        self, code: CodePath, conn: Connection, tenant: CallerTenant
    ) -> dict[str, Any]:
        """Archive a reward: no longer listed nor claimable; its claims stay."""
        row = _found(await store.get_reward(conn, tenant, code), code)
        body = msgspec.json.encode({**row.body, "status": "archived"}).decode()
        updated = await store.update_reward(conn, tenant, code, "archived", row.stock, body)
        return reward_body(_found(updated, code))

    @post("/rewards/{code:str}/codes", responses=PROBLEMS, status_code=200)
    async def upload_codes(
        self, code: CodePath, data: JSONBody[CodeUpload], conn: Connection, tenant: CallerTenant
    ) -> dict[str, Any]:
        """Add up to 1000 unique codes to a code pool reward; duplicates are skipped."""
        row = _found(await store.get_reward(conn, tenant, code), code)
        if not row.code_pool:
            raise ProblemError(409, "not_a_code_pool", f"The reward {code!r} has no code pool.")
        added = await store.add_codes(conn, tenant, code, sorted(set(data.codes)))
        return {
            "added": added,
            "skipped": len(data.codes) - added,
            "codes": await store.code_counts(conn, tenant, code),
        }

    @post("/claims/{claim_id:str}/cancel", responses=PROBLEMS, status_code=200)
    async def cancel_claim(
        self,
        claim_id: ClaimPath,
        conn: Connection,
        tenant: CallerTenant,
        rule_cache: NamedDependency[RuleCache],
        standings: BoardStandings,
        data: JSONBody[CancelRequest],
    ) -> dict[str, Any]:
        """Cancel a claim: points refunded, stock given back, the code returned to the pool
        (`code_action: return`, the default) or voided. Again: the same answer, nothing more."""
        try:
            async with conn.transaction():
                outcome = await rewards.cancel_claim(
                    conn,
                    tenant,
                    rule_cache,
                    claim_id,
                    void_code=data.code_action == "void",
                    reason=data.reason,
                    now=datetime.now(UTC),
                    standings=standings,
                )
        except rewards.RewardNotFound as exc:
            raise ProblemError(404, "claim_not_found", f"No claim {claim_id!r}.") from exc
        return {
            **claim_body(outcome.claim),
            "balance": outcome.balance,
            "duplicate": outcome.duplicate,
        }


class RewardCatalogueController(Controller):
    """What participants may claim, and what they claimed (reads a standby may answer)."""

    path = "/"
    tags = ("rewards",)
    security = requires("read", participant_token=True)
    dependencies = READS

    @get("/rewards", responses=PROBLEMS)
    async def catalogue(
        self,
        conn: Connection,
        tenant: CallerTenant,
        caller: Caller,
        participant_id: ParticipantQuery = None,
    ) -> dict[str, Any]:
        """Rewards not archived, each with `eligible` and, when not, `reasons`
        (not_active, out_of_stock, limit_reached, insufficient_balance). Without
        `participant_id` only the reward's own reasons are judged."""
        participant_id = participant_id or caller.participant_id
        if participant_id is not None:
            check_participant(caller, participant_id)
        rows = await store.list_rewards(conn, tenant)
        held: dict[str, int] = {}
        balance = None
        if participant_id is not None:
            held = await store.claims_per_reward(conn, tenant, participant_id)
            balance, _, _ = await read_balance(conn, tenant, participant_id)
        items = rewards.catalogue(rows, datetime.now(UTC), balance, held)
        return {"participant_id": participant_id, "balance": balance, "items": items}

    @get("/participants/{participant_id:str}/claims", responses=PROBLEMS)
    async def participant_claims(
        self, participant_id: ParticipantPath, conn: Connection, tenant: CallerTenant, page: Page
    ) -> dict[str, Any]:
        """A participant's claims (cancelled ones too), newest first, cursor-paginated."""
        rows = await store.list_claims(
            conn, tenant, participant_id, after=page.after, limit=page.limit + 1
        )
        return page.answer(rows, "claim_id")


class RewardClaimController(Controller):
    """Claiming a reward: a write, spending the participant's points."""

    path = "/rewards"
    tags = ("rewards",)
    security = requires("write", participant_token=True)

    @post("/{code:str}/claim", responses=PROBLEMS, status_code=200)
    async def claim(
        self,
        code: CodePath,
        data: JSONBody[ClaimRequest],
        conn: Connection,
        tenant: CallerTenant,
        caller: Caller,
        rule_cache: NamedDependency[RuleCache],
        standings: BoardStandings,
        idempotency_key: IdempotencyHeader = None,
    ) -> dict[str, Any]:
        """Claim a reward: points spent, one code handed out (code pools), the claim
        recorded and `reward.claimed` emitted, at once. 409 `insufficient_balance`,
        `out_of_stock`, `claim_limit_reached`, `reward_not_active` refuse it."""
        check_participant(caller, data.participant_id)
        try:
            async with conn.transaction():
                outcome = await rewards.claim_reward(
                    conn,
                    tenant,
                    rule_cache,
                    data.participant_id,
                    code,
                    idempotency_key=data.idempotency_key or idempotency_key,
                    now=datetime.now(UTC),
                    standings=standings,
                )
        except rewards.RewardNotFound as exc:
            raise ProblemError(404, "reward_not_found", f"No reward with code {code!r}.") from exc
        except rewards.IdempotencyConflict as exc:
            raise ProblemError(
                409,
                "idempotency_conflict",
                "This idempotency key was already used for another claim.",
            ) from exc
        except rewards.ClaimRefused as exc:
            raise _refused(exc, code) from exc
        return {
            **claim_body(outcome.claim),
            "balance": outcome.balance,
            "duplicate": outcome.duplicate,
        }


# A refusal's reason (as the catalogue lists it) -> the claim's error code and detail.
_REFUSALS = {
    rewards.NOT_ACTIVE: ("reward_not_active", "The reward {code!r} cannot be claimed now."),
    rewards.OUT_OF_STOCK: ("out_of_stock", "The reward {code!r} is out of stock."),
    rewards.LIMIT_REACHED: (
        "claim_limit_reached",
        "The participant holds as many claims of {code!r} as it allows.",
    ),
    rewards.INSUFFICIENT_BALANCE: (
        "insufficient_balance",
        "The balance does not cover the reward {code!r}.",
    ),
}


def _refused(exc: rewards.ClaimRefused, code: str) -> ProblemError:
    error, detail = _REFUSALS[exc.reason]
    return ProblemError(
        409,
        error,
        detail.format(code=code),
        extra={"reason": exc.reason, "balance": exc.balance},
    )


reward_controllers = [RewardAdminController, RewardCatalogueController, RewardClaimController]
