"""The rewards catalogue: reward definitions, who may claim what (a pure judgment shared
by the catalogue and the claim), and claims and their cancellation.

A claim runs in the caller's transaction under the participant's lock: the limit and the
balance cannot change under it, the stock is taken by a conditional UPDATE (or a code by
`FOR UPDATE SKIP LOCKED`), and the points are spent through `manual.change_points`, the
one spending path. Anything refused raises, and the caller's rollback undoes the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from bricqs.ids import ulid
from bricqs.mechanics.apply import RuleSource
from bricqs.mechanics.definitions import Code, Name, Status
from bricqs.mechanics.manual import IdempotencyConflict, change_points
from bricqs.mechanics.outcomes import record_outcomes, system_fact
from bricqs.schemas import Fact
from bricqs.storage import rewards as store
from bricqs.storage.balances import read_balance
from bricqs.storage.locks import lock_participants
from bricqs.storage.rewards import ClaimRow, RewardRow
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Conn, Tenant
from bricqs.validation import FieldError

__all__ = ["IdempotencyConflict"]  # raised by claims, too

# Why a participant may not claim a reward, in the order they are reported.
NOT_ACTIVE, OUT_OF_STOCK, LIMIT_REACHED, INSUFFICIENT_BALANCE = (
    "not_active",
    "out_of_stock",
    "limit_reached",
    "insufficient_balance",
)


class RewardDefinition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Something participants buy with points: counted stock, a pool of unique codes the
    admin uploads, or (neither) unlimited."""

    code: Code
    name: Name
    cost: Annotated[int, Meta(ge=0, le=1_000_000_000)]
    type: Literal["coupon", "voucher", "physical", "digital"]
    stock: Annotated[int, Meta(ge=0, le=1_000_000_000)] | None = None
    """How many can be claimed in all (cancelled claims give theirs back)."""
    code_pool: bool = False
    """Each claim hands out one code of the pool (`POST …/codes`); the pool is the stock."""
    limit_per_participant: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    """Claims (not cancelled) one participant may hold; none: no limit."""
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    """Claimable from `starts_at` (inclusive) until `ends_at` (exclusive)."""
    description: Annotated[str, Meta(max_length=2000, pattern=r"^[^\x00]*$")] = ""
    status: Status = "active"


def reward_errors(reward: RewardDefinition) -> list[FieldError]:
    """Rules of a reward the types alone cannot say."""
    errors: list[FieldError] = []
    if reward.code_pool and reward.stock is not None:
        errors.append(
            FieldError(
                "stock", "a code pool reward has no stock: its codes are", "invalid_combination"
            )
        )
    for name in ("starts_at", "ends_at"):
        value = getattr(reward, name)
        if value is not None and value.tzinfo is None:
            errors.append(FieldError(name, "must carry a UTC offset", "invalid_format"))
    if reward.starts_at and reward.ends_at and reward.starts_at >= reward.ends_at:
        errors.append(FieldError("ends_at", "must be after starts_at", "invalid_range"))
    return errors


def stored_reward(row: RewardRow) -> RewardDefinition:
    """The definition of a stored reward."""
    return msgspec.convert(row.body, RewardDefinition)


def is_active(reward: RewardDefinition, now: datetime) -> bool:
    """Whether the reward can be claimed at `now` (status and window)."""
    return (
        reward.status == "active"
        and (reward.starts_at is None or reward.starts_at <= now)
        and (reward.ends_at is None or now < reward.ends_at)
    )


def refusals(
    reward: RewardDefinition, remaining: int | None, now: datetime, balance: int, held: int
) -> list[str]:
    """Why a participant with `balance` points, holding `held` claims of the reward, may
    not claim it now (empty: they may)."""
    reasons = []
    if not is_active(reward, now):
        reasons.append(NOT_ACTIVE)
    if remaining is not None and remaining <= 0:
        reasons.append(OUT_OF_STOCK)
    if reward.limit_per_participant is not None and held >= reward.limit_per_participant:
        reasons.append(LIMIT_REACHED)
    if balance < reward.cost:
        reasons.append(INSUFFICIENT_BALANCE)
    return reasons


def catalogue(
    rows: list[RewardRow], now: datetime, balance: int | None, held: dict[str, int]
) -> list[dict[str, Any]]:
    """The rewards as a participant with `balance` points, holding `held` claims per
    reward, sees them: each with `eligible` and the `reasons` why not. Without a balance
    (no participant) only the reward's own reasons are judged."""
    items = []
    for row in rows:
        reward = stored_reward(row)
        reasons = refusals(
            reward,
            row.remaining,
            now,
            reward.cost if balance is None else balance,  # no participant: covered
            held.get(row.code, 0),
        )
        items.append(
            {
                **row.body,
                "remaining": row.remaining,
                "claimed_by_participant": held.get(row.code, 0),
                "eligible": not reasons,
                "reasons": reasons,
            }
        )
    return items


class RewardNotFound(Exception):
    """No reward (or claim) by that code (or id) in the tenant."""


class ClaimRefused(Exception):
    """A claim the reward's rules refuse; `reason` is one of the refusals."""

    def __init__(self, reason: str, balance: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.balance = balance


@dataclass(frozen=True)
class ClaimOutcome:
    """A claim (or its cancellation) as it now stands, and whether this call made it."""

    claim: ClaimRow
    balance: int
    duplicate: bool


def _fact(tenant: Tenant, claim: ClaimRow, fact_type: str, at: datetime, reward_type: str) -> Fact:
    properties = {
        "reward": claim.reward_code,
        "claim_id": claim.claim_id,
        "cost": claim.cost,
        "type": reward_type,
        "code": claim.code,
    }
    if fact_type == "reward.cancelled":
        properties["code_action"] = claim.code_action
    return system_fact(tenant, claim.participant_id, fact_type, properties, at, claim.claim_id)


async def claim_reward(
    conn: Conn,
    tenant: Tenant,
    rules_for: RuleSource,
    participant_id: str,
    reward_code: str,
    *,
    idempotency_key: str | None,
    now: datetime,
    standings: Standings | None = None,
) -> ClaimOutcome:
    """Claim a reward for a participant, in the caller's transaction.

    A repeat with the same idempotency key answers the first claim (IdempotencyConflict
    if the key named another participant or reward). Raises RewardNotFound, or
    ClaimRefused with the first reason the reward refuses; the caller then rolls back.
    """
    await lock_participants(conn, [(tenant.project_id, tenant.environment, participant_id)])
    if idempotency_key is not None:
        earlier = await store.find_claim(conn, tenant, key=idempotency_key)
        if earlier is not None:
            if (earlier.participant_id, earlier.reward_code) != (participant_id, reward_code):
                raise IdempotencyConflict
            balance, _, _ = await read_balance(conn, tenant, participant_id)
            return ClaimOutcome(earlier, balance, duplicate=True)
    row = await store.get_reward(conn, tenant, reward_code, count_codes=False)
    if row is None or row.status == "archived":
        raise RewardNotFound(reward_code)
    reward = stored_reward(row)
    balance, _, _ = await read_balance(conn, tenant, participant_id)
    held = 0
    if reward.limit_per_participant is not None:  # else no need to count them
        held = (await store.claims_per_reward(conn, tenant, participant_id)).get(reward_code, 0)
    reasons = refusals(reward, row.remaining, now, balance, held)
    if reasons:
        raise ClaimRefused(reasons[0], balance)
    claim_id = "clm_" + ulid()
    debit = None
    if reward.cost:
        change = await change_points(
            conn,
            tenant,
            rules_for,
            participant_id,
            -reward.cost,
            reason=f"reward {reward_code} (claim {claim_id})",
            idempotency_key=None,
            standings=standings,
        )
        debit, balance = change.entry_id, change.balance
    # A pool's code is taken before the claim that names it (SKIP LOCKED: claims of one
    # pool do not wait for each other); a stock unit last, since the reward's row stays
    # locked from its update to the commit and every claim of that reward waits for it.
    code = None
    if row.code_pool:
        code = await store.take_code(conn, tenant, reward_code)
        if code is None:
            raise ClaimRefused(OUT_OF_STOCK, balance + reward.cost)
    claim = ClaimRow(
        claim_id=claim_id,
        participant_id=participant_id,
        reward_code=reward_code,
        cost=reward.cost,
        code=code,
        stock_taken=row.stock is not None,
        status="claimed",
        idempotency_key=idempotency_key,
        debit_entry_id=debit,
        refund_entry_id=None,
        claimed_at=now,
        cancelled_at=None,
        code_action=None,
        cancel_reason=None,
    )
    if not await store.insert_claim(conn, tenant, claim):
        raise IdempotencyConflict  # the key went to another participant's claim meanwhile
    fact = _fact(tenant, claim, "reward.claimed", now, reward.type)
    await record_outcomes(conn, tenant, rules_for, [fact], standings=standings)
    if claim.stock_taken and not await store.take_stock(conn, tenant, reward_code):
        raise ClaimRefused(OUT_OF_STOCK, balance + reward.cost)
    return ClaimOutcome(claim, balance, duplicate=False)


async def cancel_claim(
    conn: Conn,
    tenant: Tenant,
    rules_for: RuleSource,
    claim_id: str,
    *,
    void_code: bool,
    reason: str,
    now: datetime,
    standings: Standings | None = None,
) -> ClaimOutcome:
    """Cancel a claim, in the caller's transaction: its points are refunded, its stock
    given back, and its code returned to the pool or voided. Cancelling a cancelled claim
    changes nothing and answers it (`duplicate`). Raises RewardNotFound for no such claim.
    """
    found = await store.find_claim(conn, tenant, claim_id=claim_id)
    if found is None:
        raise RewardNotFound(claim_id)
    participant_id = found.participant_id
    await lock_participants(conn, [(tenant.project_id, tenant.environment, participant_id)])
    claim = await store.find_claim(conn, tenant, claim_id=claim_id)  # as of the lock
    assert claim is not None  # claims are only deleted with their participant (erasure)
    if claim.status == "cancelled":
        balance, _, _ = await read_balance(conn, tenant, participant_id)
        return ClaimOutcome(claim, balance, duplicate=True)
    refund = None
    if claim.cost:
        change = await change_points(
            conn,
            tenant,
            rules_for,
            participant_id,
            claim.cost,
            reason=f"refund of reward {claim.reward_code} (claim {claim_id})",
            idempotency_key=None,
            standings=standings,
            refund=True,
        )
        refund = change.entry_id
    row = await store.get_reward(conn, tenant, claim.reward_code, count_codes=False)
    reward_type = "" if row is None else stored_reward(row).type
    action = None
    if claim.code is not None:
        await store.release_code(conn, tenant, claim.reward_code, claim.code, void=void_code)
        action = "voided" if void_code else "returned"
    if claim.stock_taken:
        await store.give_back_stock(conn, tenant, claim.reward_code)
    cancelled = await store.mark_cancelled(
        conn, tenant, claim_id, at=now, code_action=action, reason=reason, refund_entry_id=refund
    )
    fact = _fact(tenant, cancelled, "reward.cancelled", now, reward_type)
    await record_outcomes(conn, tenant, rules_for, [fact], standings=standings)
    balance, _, _ = await read_balance(conn, tenant, participant_id)
    return ClaimOutcome(cancelled, balance, duplicate=False)
