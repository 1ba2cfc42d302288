"""Judging a round's badges and challenges: which ones the round's facts touched, the
points in time each is judged at, the buckets that takes (read while the round's other
work runs), then awards and completions, with their rewards."""

from __future__ import annotations

from dataclasses import dataclass

from bricqs.ids import ulid
from bricqs.mechanics.evaluation import (
    EvaluationPoint,
    bucket_ranges,
    current_point,
    evaluation_points,
    values_at,
)
from bricqs.mechanics.rounds import Round
from bricqs.mechanics.ruleset import CompiledBadge, CompiledChallenge, CompiledCriterion
from bricqs.schemas import Fact
from bricqs.storage.awards import award_badges, complete_challenges
from bricqs.storage.ledger import LedgerEntry
from bricqs.storage.progress import BucketReads, WrittenBuckets, send_bucket_reads
from bricqs.storage.tenants import Conn


def latest_fact(facts: list[Fact]) -> Fact:
    """The fact an award or completion is credited to: the latest of those that led to it
    (by time, then id; backfills credit the same one).

    A loop, not max() with a key: compiled, max() calls the key through Python's call
    protocol for every fact, and most lists hold one fact."""
    latest = facts[0]
    for i in range(1, len(facts)):
        fact = facts[i]
        if (fact.occurred_at, fact.fact_id) > (latest.occurred_at, latest.fact_id):
            latest = fact
    return latest


def _reached(
    values: dict[tuple[str, str], dict[str, float]],
    criterion: CompiledCriterion,
    pid: str,
    points: list[EvaluationPoint],
    at_least: float,
) -> bool:
    """Whether the criterion's value for `pid` is at least `at_least` at any of `points`.

    A module function, not a closure over `values`: compiled, a nested function is
    called through Python's call protocol, with its float argument boxed."""
    found = values[(criterion.criterion_id, pid)]
    if len(points) == 1:  # the whole history or one period: most judgements
        return found[points[0].label] >= at_least
    return any(found[p.label] >= at_least for p in points)


@dataclass
class Judging:
    """The badges and challenges a round judges, the points each is judged at, and the
    reads of the buckets that needs, sent."""

    badges: dict[tuple[str, str], tuple[CompiledBadge, list[Fact]]]
    challenges: dict[tuple[str, str], tuple[CompiledChallenge, list[Fact]]]
    badge_points: dict[tuple[str, str], list[list[EvaluationPoint]]]
    challenge_points: dict[tuple[str, str], tuple[list[EvaluationPoint], EvaluationPoint]]
    plan: list[tuple[CompiledCriterion, str, list[EvaluationPoint]]]
    reads: BucketReads
    written: WrittenBuckets


_Wanted = dict[tuple[str, str], tuple[CompiledCriterion, list[list[EvaluationPoint]]]]
"""The points each (criterion, participant) is judged at, one list per badge or challenge."""


def _judged_at(
    wanted: _Wanted, criterion: CompiledCriterion, pid: str, points: list[EvaluationPoint]
) -> list[EvaluationPoint]:
    """Add `points` to what `wanted` holds for (criterion, pid); return them. (A module
    function, not a closure: see `_reached`.)"""
    entry = wanted.get((criterion.criterion_id, pid))
    if entry is None:
        wanted[(criterion.criterion_id, pid)] = (criterion, [points])
    else:
        entry[1].append(points)
    return points


async def plan_judging(
    conn: Conn,
    r: Round,
    touched: dict[tuple[str, str], list[Fact]],
    written: WrittenBuckets,
) -> Judging | None:
    """What judging the badges and challenges whose criteria `touched` moved takes, its
    reads sent (None: nothing to judge); `written`: the buckets this round just wrote, as
    they are now (not read again)."""
    badges: dict[tuple[str, str], tuple[CompiledBadge, list[Fact]]] = {}
    challenges: dict[tuple[str, str], tuple[CompiledChallenge, list[Fact]]] = {}
    for (pid, cid), facts in touched.items():
        for badge in r.rules.badges_by_criterion.get(cid, ()):
            badges.setdefault((pid, badge.badge.code), (badge, []))[1].extend(facts)
        for challenge in r.rules.challenges_by_criterion.get(cid, ()):
            challenges.setdefault((pid, challenge.challenge.code), (challenge, []))[1].extend(facts)
    if not badges and not challenges:
        return None

    # The points each (criterion, participant) is judged at, from every badge and
    # challenge using it: their buckets are read in two queries, then valued together.
    wanted: _Wanted = {}

    badge_points: dict[tuple[str, str], list[list[EvaluationPoint]]] = {}
    for (pid, code), (badge, facts) in badges.items():
        times = [f.occurred_at for f in facts]
        badge_points[(pid, code)] = [
            _judged_at(wanted, t.criterion, pid, evaluation_points(t.criterion.window, times))
            for t in badge.thresholds
        ]
    challenge_points: dict[tuple[str, str], tuple[list[EvaluationPoint], EvaluationPoint]] = {}
    for (pid, code), (challenge, facts) in challenges.items():
        times = [f.occurred_at for f in facts]
        window = challenge.challenge.window
        points = evaluation_points(window, times)
        # Progress as of the latest fact is read only to be reported in the effects.
        now_point = current_point(window, max(times))
        read = [*points, now_point] if r.report else points
        for objective in challenge.objectives:
            _judged_at(wanted, objective.criterion, pid, read)
        challenge_points[(pid, code)] = (points, now_point)

    # Most (criterion, participant) pairs are judged for one badge or challenge: their one
    # list has no repeats (evaluation_points makes none), so it is taken as it is.
    plan = [
        (
            criterion,
            pid,
            lists[0]
            if len(lists) == 1
            else list({p.label: p for points in lists for p in points}.values()),
        )
        for (_, pid), (criterion, lists) in wanted.items()
    ]
    # A point of one bucket (the whole history, a calendar period) is most often the very
    # bucket the round wrote; only the others, and rolling windows' days, are read.
    ranges, distinct_ranges = bucket_ranges(plan, known=written.keys)
    reads = await send_bucket_reads(conn, r.tenant, ranges, distinct_ranges)
    return Judging(badges, challenges, badge_points, challenge_points, plan, reads, written)


async def judge_badges_and_challenges(conn: Conn, r: Round, judging: Judging) -> None:
    """Award the badges and complete the challenges `judging` planned."""
    badges, challenges, plan = judging.badges, judging.challenges, judging.plan
    badge_points, challenge_points = judging.badge_points, judging.challenge_points
    progress, distinct = await judging.reads.values()
    progress.update(await judging.written.values())
    values = {
        (criterion.criterion_id, pid): values_at(criterion, pid, points, progress, distinct)
        for criterion, pid, points in plan
    }

    awards: list[tuple[str, str, str, str, str | None]] = []
    award_facts: dict[tuple[str, str, str], Fact] = {}
    for (pid, code), (badge, facts) in badges.items():
        thresholds = list(zip(badge.thresholds, badge_points[(pid, code)], strict=True))
        met = [_reached(values, t.criterion, pid, points, t.threshold) for t, points in thresholds]
        period = badge.period_window
        if period is None:
            if all(met) if badge.badge.combine == "all" else any(met):
                latest = latest_fact(facts)
                awards.append((code, pid, "once", "criteria", latest.fact_id))
                award_facts[(code, pid, "once")] = latest
            continue
        # Repeatable: once per calendar period in which the criteria are met.
        for point in evaluation_points(period, [f.occurred_at for f in facts]):
            met_here = [
                _reached(
                    values,
                    t.criterion,
                    pid,
                    [point] if t.criterion.window == period else points,
                    t.threshold,
                )
                for t, points in thresholds
            ]
            if all(met_here) if badge.badge.combine == "all" else any(met_here):
                latest = latest_fact(facts)
                awards.append((code, pid, point.label, "criteria", latest.fact_id))
                award_facts[(code, pid, point.label)] = latest

    completions: list[tuple[str, str, str | None]] = []
    completion_facts: dict[tuple[str, str], Fact] = {}
    for (pid, code), (challenge, facts) in challenges.items():
        points, now_point = challenge_points[(pid, code)]
        done = any(
            all(_reached(values, o.criterion, pid, [p], o.target) for o in challenge.objectives)
            for p in points
        )
        latest = latest_fact(facts)
        if r.report:
            r.effects_of(latest).challenges.append(
                {
                    "challenge": code,
                    "objectives": [
                        {
                            "code": o.code,
                            "value": values[(o.criterion.criterion_id, pid)][now_point.label],
                            "target": o.target,
                        }
                        for o in challenge.objectives
                    ],
                    "completed": done,
                }
            )
        if done:
            completions.append((code, pid, latest.fact_id))
            completion_facts[(code, pid)] = latest

    for code, pid in await complete_challenges(conn, r.tenant, completions):
        fact = completion_facts[(code, pid)]
        r.emit(fact, "challenge.completed", {"challenge": code})
        reward = r.rules.challenges[code].challenge.reward
        if reward is None:
            continue
        if reward.points:
            r.ledger.append(
                (
                    LedgerEntry(
                        entry_id="pts_" + ulid(),
                        participant_id=pid,
                        amount=reward.points,
                        kind="reward",
                        source=f"challenge:{code}",
                        fact_id=fact.fact_id,
                        cap_bucket=None,
                        occurred_at=fact.occurred_at,
                        reason=f"challenge {code}",
                    ),
                    fact,
                )
            )
        if reward.badge:
            awards.append((reward.badge, pid, "once", f"challenge:{code}", fact.fact_id))
            award_facts[(reward.badge, pid, "once")] = fact

    for code, pid, award_key in await award_badges(conn, r.tenant, awards):
        fact = award_facts[(code, pid, award_key)]
        properties = {"badge": code, "award_key": award_key}
        r.emit(fact, "badge.awarded", properties)
