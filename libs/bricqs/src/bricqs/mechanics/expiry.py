"""Writing off expired points: each due lot leaves the balance with a `points.expired`
ledger entry and system fact (storage/lots.py says when a lot is due, and who locks what).

Everything an expiry makes is a pure function of its lot: the entry and the fact share
an id derived from the lot and its expiry instant, and occur at that instant. So a crash
and rerun, or two replicas at once, write a lot off once, and the outcome does not depend
on when the chore ran. Lifetime earned (and so tiers) and points leaderboards, which rank
points earned, are left as they were.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from bricqs.ids import derived_ulid
from bricqs.mechanics.apply import RuleSource
from bricqs.mechanics.outcomes import record_outcomes
from bricqs.schemas import Fact
from bricqs.storage.balances import write_off_balances
from bricqs.storage.ledger import LedgerEntry, write_ledger
from bricqs.storage.locks import lock_participants
from bricqs.storage.lots import DueLot, lock_due_lots, take_from_lots
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Conn, Tenant

EXPIRED = "points.expired"


def expiry_body(lot: DueLot) -> str:
    """The id body of a lot's expiry (`pts_<body>` entry, `fact_<body>` fact): ordered by
    the expiry instant, unique per tenant, participant and lot."""
    ms = int(lot.expires_at.timestamp() * 1000)
    key = "\x1f".join((lot.project_id, lot.environment, lot.participant_id, lot.lot_id))
    return derived_ulid(ms, key)


async def expire_due_points(
    conn: Conn,
    rules_for: RuleSource,
    now: datetime,
    limit: int,
    *,
    standings: Standings | None = None,
) -> int:
    """Write off up to `limit` lots due at `now`, in the caller's transaction; how many.

    Rules triggered by `points.expired` run, and webhooks subscribed to it are owed, in
    the same transaction. A caller that gets `limit` back has more to do.
    """
    lots = await lock_due_lots(conn, now, limit)
    if not lots:
        return 0
    await lock_participants(conn, [(x.project_id, x.environment, x.participant_id) for x in lots])
    by_tenant: dict[Tenant, list[DueLot]] = defaultdict(list)
    for lot in lots:
        by_tenant[Tenant(lot.project_id, lot.environment)].append(lot)
    for tenant, due in by_tenant.items():
        facts = await _write_off(conn, tenant, due)
        await record_outcomes(conn, tenant, rules_for, facts, standings=standings)
    return len(lots)


async def _write_off(conn: Conn, tenant: Tenant, lots: list[DueLot]) -> list[Fact]:
    """One tenant's lots off the balances; the `points.expired` facts they make."""
    entries = {
        lot.lot_id: LedgerEntry(
            entry_id="pts_" + expiry_body(lot),
            participant_id=lot.participant_id,
            amount=-lot.remaining,
            kind="expire",
            source="expiry",
            fact_id=None,
            cap_bucket=None,
            occurred_at=lot.expires_at,
            reason=f"points of {lot.lot_id} expired",
        )
        for lot in lots
    }
    written = set(await write_ledger(conn, tenant, list(entries.values())))
    await take_from_lots(conn, tenant, [(x.participant_id, x.lot_id, x.remaining) for x in lots])
    # A lot whose entry exists was written off already, whatever it says it holds: it is
    # emptied, and its points do not leave the balance twice.
    lots = [lot for lot in lots if entries[lot.lot_id].entry_id in written]
    expired: dict[str, int] = defaultdict(int)
    for lot in lots:
        expired[lot.participant_id] += lot.remaining
    balances = await write_off_balances(conn, tenant, expired)
    facts = [
        Fact(
            fact_id="fact_" + expiry_body(lot),
            fact_type=EXPIRED,
            project_id=tenant.project_id,
            environment=tenant.environment,
            participant_id=lot.participant_id,
            event_id=entries[lot.lot_id].entry_id,
            properties={
                "amount": lot.remaining,
                "lot": lot.lot_id,
                "earned_at": lot.earned_at.isoformat(),
                "expires_at": lot.expires_at.isoformat(),
                "balance": balances.get(lot.participant_id, 0),
            },
            occurred_at=lot.expires_at,
        )
        for lot in lots
    ]
    return facts
