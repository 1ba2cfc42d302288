"""Manual points award and deduct, and manual badge awards (the api's write actions).

Each runs in the caller's transaction under the participant's lock, records system facts
like the engine does, and feeds them to the engine so rules chained on them still fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from bricqs.ids import ulid
from bricqs.mechanics.apply import RuleSource
from bricqs.mechanics.outcomes import record_outcomes, system_fact
from bricqs.mechanics.ruleset import tier_level
from bricqs.storage.awards import award_badges
from bricqs.storage.balances import apply_balance_changes, read_balance
from bricqs.storage.ledger import LedgerEntry, ManualEntry, find_manual_entry, write_ledger
from bricqs.storage.locks import lock_participants
from bricqs.storage.lots import plan_spending, take_from_lots
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Conn, Tenant


class InsufficientBalance(Exception):
    """A deduct asked for more points than the participant has."""

    def __init__(self, balance: int) -> None:
        super().__init__(f"balance is {balance}")
        self.balance = balance


class IdempotencyConflict(Exception):
    """The idempotency key already names another change (participant, amount or reason)."""


@dataclass(frozen=True)
class PointsChange:
    """The result of a manual award or deduct."""

    entry_id: str
    participant_id: str
    amount: int
    balance: int
    duplicate: bool


async def change_points(
    conn: Conn,
    tenant: Tenant,
    rules_for: RuleSource,
    participant_id: str,
    amount: int,
    *,
    reason: str,
    idempotency_key: str | None,
    standings: Standings | None = None,
    now: datetime | None = None,
    refund: bool = False,
) -> PointsChange:
    """Award (amount > 0) or deduct (amount < 0) points atomically, at `now` (the clock's
    time unless given).

    A refund (`refund=True`, amount > 0) gives back points spent earlier (a cancelled
    reward claim): it lowers `total_spent` instead of raising `total_earned`, so lifetime
    points, tiers and points boards do not move, and it is told as `points.refunded`. The
    points come back as points that never expire (the lots they were drawn from stay spent).

    A repeat of the same change with the same idempotency key returns the first result;
    the key with another participant, amount or reason raises IdempotencyConflict. A
    deduct beyond the balance raises InsufficientBalance. Neither changes anything.

    Every spend of points goes through here: a deduct draws on the participant's lots
    that expire soonest first, then on points that never expire; points of lots already
    due at `now` are not spendable (`storage.lots`).
    """
    await lock_participants(conn, [(tenant.project_id, tenant.environment, participant_id)])
    if idempotency_key is not None:
        found = await find_manual_entry(conn, tenant, idempotency_key)
        if found is not None:
            return await _replay(conn, tenant, found, participant_id, amount, reason)
    _, earned_before, _ = await read_balance(conn, tenant, participant_id)
    now = now or datetime.now(UTC)
    if refund and amount <= 0:
        raise ValueError("a refund gives points back: amount > 0")
    spending = None
    if amount < 0:
        spending = await plan_spending(conn, tenant, participant_id, -amount, now)
        if spending.available < -amount:
            raise InsufficientBalance(spending.available)
    entry = LedgerEntry(
        entry_id="pts_" + ulid(),
        participant_id=participant_id,
        amount=amount,
        kind="refund" if refund else "award" if amount > 0 else "deduct",
        source="manual",
        fact_id=None,
        cap_bucket=None,
        occurred_at=now,
        reason=reason,
        idempotency_key=idempotency_key,
    )
    if not await write_ledger(conn, tenant, [entry]):
        # The participant lock does not cover the key: a change for another participant
        # took it after our look-up, and our insert waited for that one to commit.
        assert idempotency_key is not None  # a fresh entry id conflicts with nothing else
        taken = await find_manual_entry(conn, tenant, idempotency_key)
        assert taken is not None
        return await _replay(conn, tenant, taken, participant_id, amount, reason)
    if spending is not None:
        await take_from_lots(
            conn, tenant, [(participant_id, lot_id, take) for lot_id, take in spending.draws]
        )
    earned, spent = (0, -amount) if refund or amount < 0 else (amount, 0)
    new_balance, earned_after = (
        await apply_balance_changes(conn, tenant, {participant_id: (earned, spent)})
    )[participant_id]
    if refund:
        facts = [
            system_fact(
                tenant,
                participant_id,
                "points.refunded",
                {"amount": amount, "source": "manual", "balance": new_balance},
                now,
                entry.entry_id,
            )
        ]
    elif amount > 0:
        facts = [
            system_fact(
                tenant,
                participant_id,
                "points.awarded",
                {"amount": amount, "source": "manual", "rule": None, "balance": new_balance},
                now,
                entry.entry_id,
            )
        ]
        rules = await rules_for(conn, tenant)
        for tier in rules.tiers:
            old, _ = tier_level(tier, earned_before)
            new, _ = tier_level(tier, earned_after)
            if old != new:
                facts.append(
                    system_fact(
                        tenant,
                        participant_id,
                        "tier.changed",
                        {
                            "tier": tier.code,
                            "from": tier.levels[old].code,
                            "to": tier.levels[new].code,
                        },
                        now,
                        entry.entry_id,
                    )
                )
    else:
        assert spending is not None
        # As a balance read shows it: without the lots already due.
        new_balance = spending.available + amount
        facts = [
            system_fact(
                tenant,
                participant_id,
                "points.deducted",
                {"amount": -amount, "source": "manual", "balance": new_balance},
                now,
                entry.entry_id,
            )
        ]
    await record_outcomes(conn, tenant, rules_for, facts, standings=standings)
    return PointsChange(entry.entry_id, participant_id, amount, new_balance, duplicate=False)


async def _replay(
    conn: Conn,
    tenant: Tenant,
    found: ManualEntry,
    participant_id: str,
    amount: int,
    reason: str,
) -> PointsChange:
    """The first result of a key's change, if this is the same change."""
    if (found.participant_id, found.amount, found.reason) != (participant_id, amount, reason):
        raise IdempotencyConflict
    balance, _, _ = await read_balance(conn, tenant, participant_id)
    return PointsChange(found.entry_id, participant_id, amount, balance, duplicate=True)


async def award_badge(
    conn: Conn,
    tenant: Tenant,
    rules_for: RuleSource,
    participant_id: str,
    badge_code: str,
    standings: Standings | None = None,
) -> bool:
    """Award a badge by hand; False when the participant already had it (idempotent)."""
    await lock_participants(conn, [(tenant.project_id, tenant.environment, participant_id)])
    awarded = await award_badges(
        conn, tenant, [(badge_code, participant_id, "once", "manual", None)]
    )
    if not awarded:
        return False
    now = datetime.now(UTC)
    fact = system_fact(
        tenant,
        participant_id,
        "badge.awarded",
        {"badge": badge_code, "award_key": "once"},
        now,
        "man_" + ulid(),
    )
    await record_outcomes(conn, tenant, rules_for, [fact], standings=standings)
    return True
