"""Points lots: the credits whose points expire, and what each still holds.

A lot is made with its ledger entry (`ledger.write_ledger`). Points that never expire are
not lots: they are the balance less what the lots hold. A lot is gone at its `expires_at`:
from that instant it is neither spendable nor counted in a balance read, and the expiry
chore (`mechanics.expiry`) writes it off the balance.

Lock order. Every writer takes the participant's advisory lock before touching a lot,
except the expiry chore, which first locks the due lots it takes (`FOR UPDATE SKIP
LOCKED`, so replicas share the work) and then their participants. That chore never waits
on a lot, and the writers holding a participant's lock never wait on one either: spending
skips locked lots (a locked lot is being expired, so it is not spendable anyway), and
earning only inserts new ones. So neither order can close a cycle of waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from bricqs.storage.tenants import Conn, Tenant

_DRAW_BATCH = 100


class Spending(NamedTuple):
    """What a participant can spend at an instant, and the lots a spend draws on."""

    available: int
    """The balance less the lots already due."""
    draws: list[tuple[str, int]]
    """(lot id, points) taken from lots, soonest expiry first; the rest of the amount
    comes from points that never expire."""


async def plan_spending(
    conn: Conn, tenant: Tenant, participant_id: str, amount: int, now: datetime
) -> Spending:
    """Lock the lots a spend of `amount` draws on, soonest expiry first (ties: earliest
    earned); the plan is complete only when `available` covers the amount.

    The caller holds the participant's lock. Nothing is written.
    """
    balance, due, held = await _holdings(conn, tenant, participant_id, now)
    available = balance - due
    never_expiring = balance - held
    draws: list[tuple[str, int]] = []
    if available < amount:
        return Spending(available, draws)
    # Lots first, soonest expiry first; points that never expire last.
    from_lots = needed = min(amount, held - due)
    after: tuple[datetime, datetime, str] | None = None
    while needed > 0:
        lots = await _lock_spendable(conn, tenant, participant_id, now, after)
        for lot_id, remaining, expires_at, earned_at in lots:
            take = min(remaining, needed)
            draws.append((lot_id, take))
            needed -= take
            after = (expires_at, earned_at, lot_id)
            if needed == 0:
                break
        if len(lots) < _DRAW_BATCH:
            break
    drawn = from_lots - needed
    if amount - drawn > never_expiring:
        # A lot was skipped, locked by the expiry chore (due at its clock, not yet at
        # ours): what it holds cannot be spent now.
        return Spending(drawn + never_expiring, [])
    return Spending(available, draws)


async def _holdings(
    conn: Conn, tenant: Tenant, participant_id: str, now: datetime
) -> tuple[int, int, int]:
    """(balance, points of lots due but not yet written off, points of all lots)."""
    cursor = await conn.execute(
        """
        SELECT coalesce((SELECT balance FROM points_balances WHERE project_id = %(p)s
                           AND environment = %(e)s AND participant_id = %(id)s), 0),
               coalesce(sum(remaining) FILTER (WHERE expires_at <= %(now)s), 0),
               coalesce(sum(remaining), 0)
        FROM points_lots WHERE project_id = %(p)s AND environment = %(e)s
          AND participant_id = %(id)s AND remaining > 0
        """,
        {"p": tenant.project_id, "e": tenant.environment, "id": participant_id, "now": now},
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def _lock_spendable(
    conn: Conn,
    tenant: Tenant,
    participant_id: str,
    now: datetime,
    after: tuple[datetime, datetime, str] | None,
) -> list[tuple[str, int, datetime, datetime]]:
    """The next lots in spending order that are not due, locked; those the expiry chore
    holds are skipped."""
    cursor = await conn.execute(
        """
        SELECT lot_id, remaining, expires_at, earned_at FROM points_lots
        WHERE project_id = %(p)s AND environment = %(e)s AND participant_id = %(id)s
          AND remaining > 0 AND expires_at > %(now)s
          AND (%(at)s::timestamptz IS NULL
               OR (expires_at, earned_at, lot_id) > (%(at)s, %(earned)s, %(lot)s))
        ORDER BY expires_at, earned_at, lot_id
        LIMIT %(n)s
        FOR UPDATE SKIP LOCKED
        """,
        {
            "p": tenant.project_id,
            "e": tenant.environment,
            "id": participant_id,
            "now": now,
            "at": after[0] if after else None,
            "earned": after[1] if after else None,
            "lot": after[2] if after else None,
            "n": _DRAW_BATCH,
        },
    )
    return [(r[0], int(r[1]), r[2], r[3]) for r in await cursor.fetchall()]


async def take_from_lots(conn: Conn, tenant: Tenant, takes: Sequence[tuple[str, str, int]]) -> None:
    """Take (participant, lot id, points) from lots locked by `plan_spending` (a spend's
    draws) or `lock_due_lots` (a write-off takes what the lot holds)."""
    if not takes:
        return
    await conn.execute(
        "UPDATE points_lots l SET remaining = l.remaining - d.take"
        " FROM unnest(%b::text[], %b::text[], %b::bigint[]) AS d(pid, lot_id, take)"
        " WHERE l.project_id = %b AND l.environment = %b AND l.participant_id = d.pid"
        " AND l.lot_id = d.lot_id",
        (
            [pid for pid, _, _ in takes],
            [lot_id for _, lot_id, _ in takes],
            [take for _, _, take in takes],
            tenant.project_id,
            tenant.environment,
        ),
    )


class DueLot(NamedTuple):
    """A lot whose points have expired and are not yet written off."""

    project_id: str
    environment: str
    participant_id: str
    lot_id: str
    remaining: int
    earned_at: datetime
    expires_at: datetime


async def lock_due_lots(conn: Conn, now: datetime, limit: int) -> list[DueLot]:
    """Up to `limit` lots due at `now` (`expires_at <= now`), soonest first, across tenants,
    locked; lots another transaction holds are left to it."""
    cursor = await conn.execute(
        "SELECT project_id, environment, participant_id, lot_id, remaining, earned_at,"
        " expires_at FROM points_lots WHERE expires_at <= %s AND remaining > 0"
        " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (now, limit),
    )
    return [DueLot(r[0], r[1], r[2], r[3], int(r[4]), r[5], r[6]) for r in await cursor.fetchall()]


class Expiry(NamedTuple):
    """A participant's expiring points as of an instant."""

    due: int
    """Points of lots due but not yet written off (already gone from a balance read)."""
    next_at: datetime | None
    next_amount: int
    """Points expiring at `next_at` (every lot expiring at that instant)."""
    total_expired: int
    """Points written off so far."""


async def read_expiry(conn: Conn, tenant: Tenant, participant_id: str, now: datetime) -> Expiry:
    """The participant's expiring points as of `now`."""
    cursor = await conn.execute(
        """
        WITH held AS (
            SELECT remaining, expires_at FROM points_lots
            WHERE project_id = %(p)s AND environment = %(e)s AND participant_id = %(id)s
              AND remaining > 0
        ), next AS (SELECT min(expires_at) AS at FROM held WHERE expires_at > %(now)s)
        SELECT coalesce((SELECT sum(remaining) FROM held WHERE expires_at <= %(now)s), 0),
               next.at,
               coalesce((SELECT sum(remaining) FROM held WHERE expires_at = next.at), 0),
               coalesce((SELECT total_expired FROM points_balances WHERE project_id = %(p)s
                           AND environment = %(e)s AND participant_id = %(id)s), 0)
        FROM next
        """,
        {"p": tenant.project_id, "e": tenant.environment, "id": participant_id, "now": now},
    )
    row = await cursor.fetchone()
    assert row is not None
    return Expiry(int(row[0]), row[1], int(row[2]), int(row[3]))
