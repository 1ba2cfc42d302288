"""Facts caused by the clock: streaks at risk, lost or frozen, closed challenge windows,
finished leaderboard runs (docs/scheduler.md).

Each kind of due work is a `DueWork`: called inside a transaction with the time and a
bound, it handles up to `limit` due items and says how many it looked at (fewer than
`limit`: nothing more is due now). What it claims it holds until the transaction ends,
so replicas never share an item and a crash leaves the item due.

A scheduled fact has a fixed id, made of its kind, tenant, subject, participant and
period, so it exists once whoever emits it and however often; it then goes the way of
every fact: stored, fed to the rules, owed to the webhooks, in one transaction that
holds its participant's lock.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from bricqs.mechanics.apply import RuleSource, apply_mechanics
from bricqs.mechanics.definitions import Streak
from bricqs.mechanics.expiry import expire_due_points
from bricqs.mechanics.outcomes import record_outcomes
from bricqs.mechanics.standings import finished_runs, forget_finished_look
from bricqs.mechanics.streak_runs import (
    deadline_after,
    moment_index,
    period_end,
    period_label,
    walk,
)
from bricqs.schemas import Fact
from bricqs.storage.locks import lock_participants, try_lock_participants
from bricqs.storage.schedule import (
    advance_challenge_expiry,
    claim_challenge_expiry,
    participants_to_expire,
    stored_fact_ids,
    tenants_with_repeating_boards,
)
from bricqs.storage.standings import Standings
from bricqs.storage.streaks import (
    Deadline,
    claim_due_deadlines,
    read_streak_periods,
    replace_deadlines,
)
from bricqs.storage.tenants import Conn, Tenant

DueWork = Callable[[Conn, RuleSource, datetime, int], Awaitable[int]]
"""One kind of due work: (connection in a transaction, rules, now, limit) -> items seen."""


def scheduled_fact(
    tenant: Tenant,
    kind: str,
    subject: str,
    participant_id: str,
    period: str,
    occurred_at: datetime,
    properties: dict[str, Any],
) -> Fact:
    """A clock-made fact whose id is a pure function of what it is about."""
    name = "\x1f".join(
        (tenant.project_id, tenant.environment, kind, subject, participant_id, period)
    )
    digest = hashlib.blake2b(name.encode(), digest_size=13).hexdigest()
    return Fact(
        fact_id="fact_s" + digest,
        fact_type=kind,
        project_id=tenant.project_id,
        environment=tenant.environment,
        participant_id=participant_id,
        event_id="sch_" + digest,
        properties=properties,
        occurred_at=occurred_at,
    )


async def emit(
    conn: Conn,
    rules_for: RuleSource,
    tenant: Tenant,
    facts: Sequence[Fact],
    standings: Standings | None = None,
) -> int:
    """Store the facts not stored yet, run the rules on them and owe their webhooks; how
    many were new. The caller holds their participants' locks."""
    if not facts:
        return 0
    known = await stored_fact_ids(conn, tenant, facts)
    new = [f for f in facts if f.fact_id not in known]
    await record_outcomes(conn, tenant, rules_for, new, standings=standings)
    return len(new)


# ---------------------------------------------------------------------------------------
# Streaks


def judge_deadline(
    streak: Streak, deadline: Deadline, active: list[int], bridged: list[int], now: datetime
) -> tuple[list[Fact], Deadline | None]:
    """The facts a due deadline owes and the deadline that follows it (pure).

    Once the watched period has ended, every period from it to the latest ended one is
    judged (a scheduler that was down catches up): each frozen one owes
    `streak.freeze_consumed`, a break `streak.lost`. Before that, `streak.at_risk`."""
    d = deadline
    code, pid, tz = d.streak_code, d.participant_id, d.timezone
    if d.ends_at > now:
        result = walk(active, bridged, d.period - 1, streak)
        fact = scheduled_fact(
            d.tenant,
            "streak.at_risk",
            code,
            pid,
            str(d.period),
            d.at_risk_at or d.ends_at,
            {
                "streak": code,
                "period": period_label(streak, d.period),
                "length": result.current,
                "ends_at": d.ends_at.isoformat(),
            },
        )
        return [fact], d._replace(at_risk_at=None)
    result = walk(active, bridged, moment_index(streak, now, tz) - 1, streak)

    def ended(kind: str, index: int, properties: dict[str, Any]) -> Fact:
        return scheduled_fact(
            d.tenant,
            kind,
            code,
            pid,
            str(index),
            period_end(streak, index, tz),
            {"streak": code, "period": period_label(streak, index), **properties},
        )

    facts = [
        ended(
            "streak.freeze_consumed",
            index,
            {"length": result.length_at(index), "freezes_left": left},
        )
        for index, left in result.frozen
        if index >= d.period
    ]
    facts += [
        ended(
            "streak.lost",
            index,
            {"length": result.length_at(index - 1), "longest": result.longest},
        )
        for index in result.lost
        if index >= d.period
    ]
    return facts, deadline_after(d.tenant, streak, pid, tz, result)


async def judge_streaks(
    conn: Conn,
    rules_for: RuleSource,
    now: datetime,
    limit: int,
    *,
    standings: Standings | None = None,
) -> int:
    """Emit what due streak deadlines owe and move them on (a `DueWork`).

    A deadline whose participant is busy in another transaction is left due for the
    next round: waiting for their lock while holding the row could deadlock with a
    writer that holds the lock and moves the row."""
    claimed = await claim_due_deadlines(conn, now, limit)
    locked = await try_lock_participants(
        conn, [(d.tenant.project_id, d.tenant.environment, d.participant_id) for d in claimed]
    )
    by_tenant: dict[Tenant, list[Deadline]] = defaultdict(list)
    for d in claimed:
        if (d.tenant.project_id, d.tenant.environment, d.participant_id) in locked:
            by_tenant[d.tenant].append(d)
    for tenant, deadlines in by_tenant.items():
        rules = await rules_for(conn, tenant)
        pairs = [(d.streak_code, d.participant_id) for d in deadlines]
        active, bridged = await read_streak_periods(conn, tenant, pairs)
        owed: list[Fact] = []
        changes: list[tuple[Deadline, Deadline | None]] = []
        for d, pair in zip(deadlines, pairs, strict=True):
            compiled = rules.streaks.get(d.streak_code)
            if compiled is None or pair not in active:  # the streak was removed or paused
                changes.append((d, None))
                continue
            facts, following = judge_deadline(
                compiled.streak, d, active[pair], bridged.get(pair, []), now
            )
            changes.append((d, following))
            owed += facts
        await replace_deadlines(conn, changes)
        await emit(conn, rules_for, tenant, owed, standings)
    return len(claimed)


# ---------------------------------------------------------------------------------------
# Challenges and leaderboards


async def expire_challenges(
    conn: Conn,
    rules_for: RuleSource,
    now: datetime,
    limit: int,
    *,
    standings: Standings | None = None,
) -> int:
    """`challenge.expired` for up to `limit` participants of one closed challenge window
    who made progress without completing it (a `DueWork`)."""
    expiry = await claim_challenge_expiry(conn, now)
    if expiry is None:
        return 0
    tenant = expiry.tenant
    rules = await rules_for(conn, tenant)
    compiled = rules.challenges.get(expiry.challenge_code)
    if compiled is None:
        await advance_challenge_expiry(conn, expiry, expiry.after, done=True)
        return 1
    ids = sorted({o.criterion.criterion_id for o in compiled.objectives})
    pids = await participants_to_expire(conn, expiry, ids, limit)
    await lock_participants(conn, [(tenant.project_id, tenant.environment, p) for p in pids])
    code, ended = expiry.challenge_code, expiry.ends_at
    await emit(
        conn,
        rules_for,
        tenant,
        [
            scheduled_fact(
                tenant,
                "challenge.expired",
                code,
                pid,
                ended.isoformat(),
                ended,
                {"challenge": code, "ended_at": ended.isoformat()},
            )
            for pid in pids
        ],
    )
    done = len(pids) < limit
    await advance_challenge_expiry(conn, expiry, pids[-1] if pids else expiry.after, done)
    # Another window, or the rest of this one, may be due: the caller calls again.
    return limit


class _Busy(Exception):
    """A winner is locked by another writer: the board is left for the next round."""


async def finish_leaderboards(
    conn: Conn,
    rules_for: RuleSource,
    now: datetime,
    limit: int,
    *,
    standings: Standings | None = None,
) -> int:
    """Announce the runs of repeating boards that ended by `now` (a `DueWork`): the same
    `leaderboard.finished` facts, marked once in `leaderboard_runs`, as the processor
    emits when a fact arrives after the end, whichever comes first."""
    announced = 0
    for tenant in await tenants_with_repeating_boards(conn):
        rules = await rules_for(conn, tenant)
        try:
            async with conn.transaction():
                facts = await finished_runs(conn, tenant, rules, now)
                winners = {(tenant.project_id, tenant.environment, f.participant_id) for f in facts}
                if await try_lock_participants(conn, list(winners)) != winners:
                    raise _Busy
                await apply_mechanics(conn, rules_for, facts, report=False, standings=standings)
                announced += len(facts)
        except _Busy:
            forget_finished_look(tenant)
    return announced


def due_work(standings: Standings | None) -> tuple[DueWork, ...]:
    """The work due by the clock, in order; the outcomes' leaderboard standings are
    mirrored to `standings` (None: PostgreSQL only, as `keep_standings` says)."""
    return (
        partial(judge_streaks, standings=standings),
        partial(expire_challenges, standings=standings),
        partial(finish_leaderboards, standings=standings),
        partial(expire_due_points, standings=standings),
    )
