"""Reading a participant's mechanics state (points, badges, challenges, streaks, tiers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bricqs.mechanics.evaluation import bucket_ranges, criterion_value, current_point
from bricqs.mechanics.ruleset import CompiledCriterion, RuleSet, tier_level
from bricqs.mechanics.streak_runs import moment_index, walk, watched
from bricqs.storage.awards import list_badge_awards, list_completions
from bricqs.storage.balances import read_balance
from bricqs.storage.lots import read_expiry
from bricqs.storage.progress import read_buckets
from bricqs.storage.streaks import read_streak_periods, read_streak_states
from bricqs.storage.tenants import Conn, Tenant


async def _values(
    conn: Conn,
    tenant: Tenant,
    participant_id: str,
    criteria: list[CompiledCriterion],
    at: datetime,
) -> dict[str, float]:
    points = {c.criterion_id: current_point(c.window, at) for c in criteria}
    ranges, distinct_ranges = bucket_ranges(
        (c, participant_id, [points[c.criterion_id]]) for c in criteria
    )
    progress, distinct = await read_buckets(conn, tenant, ranges, distinct_ranges)
    return {
        c.criterion_id: criterion_value(
            c, participant_id, points[c.criterion_id], progress, distinct
        )
        for c in criteria
    }


async def points_state(
    conn: Conn, tenant: Tenant, participant_id: str, now: datetime | None = None
) -> dict[str, Any]:
    """Balance and lifetime totals as of `now` (the clock's time unless given), and the
    next expiry (`{"at", "amount"}`, null when no points expire).

    Points are gone from the balance at their expiry instant, even before the expiry
    chore writes them off.
    """
    balance, earned, spent = await read_balance(conn, tenant, participant_id)
    expiry = await read_expiry(conn, tenant, participant_id, now or datetime.now(UTC))
    return {
        "balance": balance - expiry.due,
        "total_earned": earned,
        "total_spent": spent,
        "total_expired": expiry.total_expired + expiry.due,
        "next_expiry": (
            None if expiry.next_at is None else {"at": expiry.next_at, "amount": expiry.next_amount}
        ),
    }


async def badges_state(
    conn: Conn, tenant: Tenant, rules: RuleSet, participant_id: str, now: datetime
) -> dict[str, Any]:
    """Earned badges, and the active ones not yet earned with their progress."""
    awards = await list_badge_awards(conn, tenant, participant_id)
    earned = [
        {"badge": code, "award_key": key, "source": source, "awarded_at": at}
        for code, key, source, at in awards
    ]
    earned_once = {code for code, key, _, _ in awards if key == "once"}
    pending = [b for b in rules.badges.values() if b.badge.code not in earned_once]
    values = await _values(
        conn, tenant, participant_id, [t.criterion for b in pending for t in b.thresholds], now
    )
    not_earned = [
        {
            "badge": badge.badge.code,
            "name": badge.badge.name,
            "combine": badge.badge.combine,
            "progress": [
                {"value": values[t.criterion.criterion_id], "threshold": t.threshold}
                for t in badge.thresholds
            ],
        }
        for badge in pending
    ]
    return {"earned": earned, "not_earned": not_earned}


async def challenges_state(
    conn: Conn, tenant: Tenant, rules: RuleSet, participant_id: str, now: datetime
) -> list[dict[str, Any]]:
    """Every active challenge with per-objective progress."""
    completed = await list_completions(conn, tenant, participant_id)
    challenges = list(rules.challenges.values())
    values = await _values(
        conn, tenant, participant_id, [o.criterion for c in challenges for o in c.objectives], now
    )
    return [
        {
            "challenge": c.challenge.code,
            "name": c.challenge.name,
            "completed": c.challenge.code in completed,
            "completed_at": completed.get(c.challenge.code),
            "objectives": [
                {
                    "code": o.code,
                    "value": values[o.criterion.criterion_id],
                    "target": o.target,
                    "met": values[o.criterion.criterion_id] >= o.target,
                }
                for o in c.objectives
            ],
        }
        for c in challenges
    ]


async def streaks_state(
    conn: Conn, tenant: Tenant, rules: RuleSet, participant_id: str, now: datetime
) -> list[dict[str, Any]]:
    """Current and longest runs, freezes left, and whether the current run needs activity
    to survive; periods missed up to `now` are judged as the scheduler judges them."""
    states = await read_streak_states(conn, tenant, participant_id)
    pairs = [(code, participant_id) for code in rules.streaks if code in states]
    active, bridged = await read_streak_periods(conn, tenant, pairs)
    result = []
    for code, compiled in rules.streaks.items():
        streak = compiled.streak
        freezes = streak.freezes.initial if streak.freezes else 0
        state = states.get(code)
        periods = active.get((code, participant_id))
        if state is None or not periods:
            result.append(
                {
                    "streak": code,
                    "current": 0,
                    "longest": 0,
                    "at_risk": False,
                    "freezes_left": freezes,
                }
            )
            continue
        tz = state[3]
        today = moment_index(streak, now, tz)
        found = walk(periods, bridged.get((code, participant_id), ()), today - 1, streak)
        result.append(
            {
                "streak": code,
                "current": found.current,
                "longest": found.longest,
                # Covered through the last period but not yet this one: the run ends
                # (or takes a freeze) unless they act now.
                "at_risk": watched(found) == today,
                "freezes_left": found.freezes_left,
                "timezone": tz,
            }
        )
    return result


async def tiers_state(
    conn: Conn, tenant: Tenant, rules: RuleSet, participant_id: str
) -> list[dict[str, Any]]:
    """The level reached on each tier ladder and the points to the next one."""
    _, earned, _ = await read_balance(conn, tenant, participant_id)
    result = []
    for tier in rules.tiers:
        index, to_next = tier_level(tier, earned)
        following = tier.levels[index + 1] if index + 1 < len(tier.levels) else None
        result.append(
            {
                "tier": tier.code,
                "lifetime_points": earned,
                "level": tier.levels[index].code,
                "level_name": tier.levels[index].name,
                "next_level": following.code if following else None,
                "points_to_next": to_next,
            }
        )
    return result
