"""Backfill: a badge or challenge applied to the facts stored before it could count them.

The rule (docs/backfill.md): a criterion's buckets are recomputed from every stored fact
of the participant, with the engine's own matching (`match_facts`), and written as
absolute values where the stored fact count is lower than the recomputed one; they are
never lowered. This needs no cut-over time: under the participant's lock (the one every
live writer takes), a fact is either stored and counted by the recomputation, or not yet
stored and counted by the live pipeline when it is, so nothing is counted twice, and the
facts a processor stored before it loaded the new definition are counted too (a job
starts JOBS_SETTLE_MS after it is asked for, once every process has loaded it).
The badge or challenge is then judged on those buckets as `apply` judges it, at every
point in time a matching fact gives; what is already held is left alone, so a second run
changes nothing.

`plan_chunk` is the one implementation of what a chunk of participants would gain: the
dry run counts it, `apply_chunk` writes it (counting what its inserts actually did).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from bricqs.ids import ulid
from bricqs.mechanics.apply import RuleSource
from bricqs.mechanics.definitions import Badge, Challenge
from bricqs.mechanics.evaluation import EvaluationPoint, evaluation_points, values_at
from bricqs.mechanics.judging import latest_fact
from bricqs.mechanics.matching import match_facts
from bricqs.mechanics.outcomes import record_outcomes, system_fact
from bricqs.mechanics.ruleset import CompiledCriterion, RuleSet, tier_level
from bricqs.mechanics.windows import period_key
from bricqs.schemas import Fact
from bricqs.storage.awards import award_badges, awards_held, complete_challenges, completed_by
from bricqs.storage.balances import apply_balance_changes
from bricqs.storage.facts import facts_of_types
from bricqs.storage.ledger import LedgerEntry, write_ledger
from bricqs.storage.locks import lock_participants
from bricqs.storage.participants import participants_after
from bricqs.storage.progress import (
    BucketRange,
    BucketValue,
    ProgressDelta,
    add_distinct_values,
    read_buckets,
    replace_progress,
)
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Conn, Tenant

BACKFILL_KINDS = {"badges": "badge", "challenges": "challenge"}
"""URL segment -> definition kind, for the kinds a backfill applies."""

SOURCE = "backfill"
# Every bucket name ('all', 'd:…', 'w:…', 'm:…') lies in this byte range.
_ALL_BUCKETS = ("", "\x7f")

DistinctValue = tuple[str, str, str, str, datetime]


@dataclass
class Outcomes:
    """What a backfill did (or, dry, would do), summed over participants."""

    participants: int = 0
    """Participants looked at."""
    participants_gaining: int = 0
    """Participants gaining a badge, a completion or points."""
    badges_awarded: int = 0
    challenges_completed: int = 0
    points_awarded: int = 0
    progress_rows: int = 0
    """Criterion buckets written, and distinct values added."""

    def add(self, other: Outcomes) -> None:
        """Sum `other` into this."""
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        """The JSON form."""
        return dict(vars(self))


@dataclass(frozen=True)
class Target:
    """The definition to backfill, compiled alone (as `preview` does)."""

    definition: Badge | Challenge
    rules: RuleSet

    @classmethod
    def of(cls, definition: Badge | Challenge) -> Target:
        """Compile `definition` whatever its status (the caller checks it is active)."""
        active = msgspec.structs.replace(definition, status="active")
        return cls(definition, RuleSet.compile([active]))

    @property
    def criteria(self) -> list[CompiledCriterion]:
        """The definition's criteria, each once."""
        return [c for found in self.rules.criteria_by_type.values() for c in found]

    @property
    def badge_codes(self) -> list[str]:
        """The badges it may award: itself, or a challenge's reward badge."""
        if isinstance(self.definition, Badge):
            return [self.definition.code]
        reward = self.definition.reward
        return [reward.badge] if reward and reward.badge else []


@dataclass
class Gains:
    """What one participant gains: buckets to write, awards and a completion to record."""

    progress: list[ProgressDelta] = field(default_factory=list)
    distinct: list[DistinctValue] = field(default_factory=list)
    awards: dict[tuple[str, str], tuple[str, Fact]] = field(default_factory=dict)
    """(badge, award_key) -> (award source, the fact it is credited to)."""
    completion: Fact | None = None
    reward_points: int = 0


@dataclass
class Held:
    """What one participant holds already, as stored."""

    progress: dict[tuple[str, str, str], BucketValue] = field(default_factory=dict)
    distinct: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    awards: set[tuple[str, str]] = field(default_factory=set)
    """(badge, award_key)."""
    completed: bool = False


@dataclass
class _Judge:
    """One participant's criteria values, from the stored buckets and its recomputed ones."""

    pid: str
    progress: dict[tuple[str, str, str], BucketValue]
    distinct: dict[tuple[str, str, str], set[str]]
    touched: dict[tuple[str, str], list[Fact]]

    def facts_of(self, criteria: Sequence[CompiledCriterion]) -> list[Fact]:
        """The facts that move any of `criteria`, each once."""
        found = {
            f.fact_id: f for c in criteria for f in self.touched.get((self.pid, c.criterion_id), [])
        }
        return list(found.values())

    def values(
        self, criterion: CompiledCriterion, points: list[EvaluationPoint]
    ) -> dict[str, float]:
        """The criterion's value at each point, by label."""
        return values_at(criterion, self.pid, points, self.progress, self.distinct)


def plan_participant(target: Target, pid: str, facts: Sequence[Fact], held: Held) -> Gains:
    """What `pid` gains from the definition over its stored `facts` (pure): buckets whose
    stored count is below the recomputed one are rewritten, then the definition is judged
    on the result at every point its matching facts give, as `apply` judges it."""
    gains = Gains()
    matches = match_facts(target.rules, facts)
    progress, distinct = dict(held.progress), {k: set(v) for k, v in held.distinct.items()}
    for delta in matches.progress:
        key = (delta.criterion_id, pid, delta.bucket)
        stored = progress.get(key)
        if stored is None or delta.facts > stored.facts:
            gains.progress.append(delta)
            progress[key] = BucketValue(delta.facts, delta.sum, delta.max)
    for value in sorted(matches.distinct):
        if value[3] not in distinct.setdefault(value[:3], set()):
            distinct[value[:3]].add(value[3])
            gains.distinct.append(value)
    judge = _Judge(pid, progress, distinct, matches.touched)
    if isinstance(target.definition, Badge):
        _judge_badge(target, target.definition, judge, gains)
    elif not held.completed:
        _judge_challenge(target, target.definition, judge, gains)
    gains.awards = {key: award for key, award in gains.awards.items() if key not in held.awards}
    return gains


def _judge_badge(target: Target, definition: Badge, judge: _Judge, gains: Gains) -> None:
    badge = target.rules.badges[definition.code]
    facts = judge.facts_of([t.criterion for t in badge.thresholds])
    if not facts:
        return
    times = [f.occurred_at for f in facts]
    judged = [
        (t, judge.values(t.criterion, evaluation_points(t.criterion.window, times)))
        for t in badge.thresholds
    ]
    combine = all if definition.combine == "all" else any
    period = badge.period_window
    if period is None:
        if combine(any(v >= t.threshold for v in found.values()) for t, found in judged):
            gains.awards[(definition.code, "once")] = (SOURCE, latest_fact(facts))
        return
    # Repeatable: once per calendar period in which the criteria are met.
    assert period.period is not None
    for point in evaluation_points(period, times):
        met = [
            found.get(point.label, 0.0) >= t.threshold
            if t.criterion.window == period
            else any(v >= t.threshold for v in found.values())
            for t, found in judged
        ]
        if combine(met):
            label = point.label
            within = [
                f
                for f in facts
                if period_key(f.occurred_at, period.period, period.timezone) == label
            ]
            gains.awards[(definition.code, label)] = (SOURCE, latest_fact(within or facts))


def _judge_challenge(target: Target, definition: Challenge, judge: _Judge, gains: Gains) -> None:
    objectives = target.rules.challenges[definition.code].objectives
    facts = judge.facts_of([o.criterion for o in objectives])
    if not facts:
        return
    points = evaluation_points(definition.window, [f.occurred_at for f in facts])
    found = {o.code: judge.values(o.criterion, points) for o in objectives}
    # Every objective met within one same window, as the engine judges it.
    if not any(all(found[o.code][p.label] >= o.target for o in objectives) for p in points):
        return
    gains.completion = latest_fact(facts)
    reward = definition.reward
    if reward and reward.points:
        gains.reward_points = reward.points
    if reward and reward.badge:
        source = f"{SOURCE}:challenge:{definition.code}"
        gains.awards[(reward.badge, "once")] = (source, gains.completion)


async def read_held(
    conn: Conn, tenant: Tenant, target: Target, pids: Sequence[str]
) -> dict[str, Held]:
    """The stored buckets, awards and completions of `pids` that the definition touches."""
    held = {pid: Held() for pid in pids}
    ranges: tuple[list[BucketRange], list[BucketRange]] = ([], [])  # progress, distinct
    for c in target.criteria:
        found = ranges[c.aggregate == "distinct"]
        found.extend(BucketRange(c.criterion_id, pid, *_ALL_BUCKETS) for pid in pids)
    progress, distinct = await read_buckets(conn, tenant, *ranges)
    for key, value in progress.items():
        held[key[1]].progress[key] = value
    for key, values in distinct.items():
        held[key[1]].distinct[key] = values
    for code in target.badge_codes:
        for pid, award_key in await awards_held(conn, tenant, code, pids):
            held[pid].awards.add((code, award_key))
    if isinstance(target.definition, Challenge):
        for pid in await completed_by(conn, tenant, target.definition.code, pids):
            held[pid].completed = True
    return held


async def plan_chunk(
    conn: Conn, tenant: Tenant, target: Target, pids: Sequence[str]
) -> dict[str, Gains]:
    """What each of `pids` gains, from what is stored now."""
    held = await read_held(conn, tenant, target, pids)
    facts = await facts_of_types(conn, tenant, pids, list(target.rules.criteria_by_type))
    by_participant: dict[str, list[Fact]] = {pid: [] for pid in pids}
    for fact in facts:
        by_participant[fact.participant_id].append(fact)
    return {pid: plan_participant(target, pid, by_participant[pid], held[pid]) for pid in pids}


def tally(plans: dict[str, Gains]) -> Outcomes:
    """The outcomes a chunk's plans amount to."""
    outcomes = Outcomes(participants=len(plans))
    for gains in plans.values():
        outcomes.participants_gaining += bool(
            gains.awards or gains.completion or gains.reward_points
        )
        outcomes.badges_awarded += len(gains.awards)
        outcomes.challenges_completed += gains.completion is not None
        outcomes.points_awarded += gains.reward_points
        outcomes.progress_rows += len(gains.progress) + len(gains.distinct)
    return outcomes


async def dry_run_outcomes(
    conn: Conn, tenant: Tenant, target: Target, *, chunk_size: int
) -> Outcomes:
    """What a backfill of every participant would do, writing nothing."""
    total = Outcomes()
    after: str | None = None
    while pids := await participants_after(conn, tenant, after, chunk_size):
        total.add(tally(await plan_chunk(conn, tenant, target, pids)))
        after = pids[-1]
    return total


async def apply_chunk(
    conn: Conn,
    tenant: Tenant,
    target: Target,
    pids: Sequence[str],
    *,
    rules_for: RuleSource,
    origin: str,
    notify: bool,
    standings: Standings | None = None,
) -> Outcomes:
    """Apply what `plan_chunk` finds for `pids`, in the caller's transaction, holding the
    participants' locks (taken here, before anything is read).

    Outcomes are recorded like the engine's, with `source: backfill`: award and ledger
    rows, and system facts (`origin`, the job's id, as their event) that rules chained on
    them see; with `notify=False` none of them owes a webhook message.
    """
    await lock_participants(conn, [(tenant.project_id, tenant.environment, p) for p in pids])
    plans = await plan_chunk(conn, tenant, target, pids)
    await replace_progress(conn, tenant, [d for g in plans.values() for d in g.progress])
    await add_distinct_values(conn, tenant, [v for g in plans.values() for v in g.distinct])
    now = datetime.now(UTC)
    facts: list[Fact] = []

    def emit(pid: str, fact_type: str, properties: dict[str, Any]) -> None:
        sourced = {**properties, "source": properties.get("source", SOURCE)}
        facts.append(system_fact(tenant, pid, fact_type, sourced, now, origin))

    code = target.definition.code
    completions = [(code, pid, g.completion.fact_id) for pid, g in plans.items() if g.completion]
    completed = [pid for _, pid in await complete_challenges(conn, tenant, completions, SOURCE)]
    for pid in completed:
        emit(pid, "challenge.completed", {"challenge": code, "job_id": origin})
    awards = [
        (badge, pid, key, source, fact.fact_id)
        for pid, g in plans.items()
        if g.completion is None or pid in completed  # a reward needs its completion
        for (badge, key), (source, fact) in g.awards.items()
    ]
    awarded = await award_badges(conn, tenant, awards)
    for badge, pid, key in awarded:
        emit(pid, "badge.awarded", {"badge": badge, "award_key": key, "job_id": origin})
    points = {pid: plans[pid].reward_points for pid in completed if plans[pid].reward_points}
    points = await _reward_points(conn, tenant, rules_for, code, plans, points, now, emit)
    # Rules chained on these outcomes (points for a badge, a badge of badges) fire.
    await record_outcomes(conn, tenant, rules_for, facts, standings=standings, notify=notify)
    gaining = {*completed, *(pid for _, pid, _ in awarded), *points}
    return Outcomes(
        participants=len(pids),
        participants_gaining=len(gaining),
        badges_awarded=len(awarded),
        challenges_completed=len(completed),
        points_awarded=sum(points.values()),
        progress_rows=sum(len(g.progress) + len(g.distinct) for g in plans.values()),
    )


async def _reward_points(
    conn: Conn,
    tenant: Tenant,
    rules_for: RuleSource,
    code: str,
    plans: dict[str, Gains],
    points: dict[str, int],
    now: datetime,
    emit: Callable[[str, str, dict[str, Any]], None],
) -> dict[str, int]:
    """Ledger rows, balances, `points.awarded` and tier changes of challenge rewards; the
    points paid (a ledger row already there for the source and fact pays nothing)."""
    if not points:
        return {}
    source = f"{SOURCE}:challenge:{code}"
    entries = []
    for pid, amount in points.items():
        fact = plans[pid].completion
        assert fact is not None
        entries.append(
            LedgerEntry(
                entry_id="pts_" + ulid(),
                participant_id=pid,
                amount=amount,
                kind="reward",
                source=source,
                fact_id=fact.fact_id,
                cap_bucket=None,
                occurred_at=now,
                reason=source,
            )
        )
    written = set(await write_ledger(conn, tenant, entries))
    points = {e.participant_id: e.amount for e in entries if e.entry_id in written}
    balances = await apply_balance_changes(conn, tenant, {p: (a, 0) for p, a in points.items()})
    tiers = (await rules_for(conn, tenant)).tiers
    for pid, amount in points.items():
        balance, earned = balances[pid]
        emit(
            pid,
            "points.awarded",
            {"amount": amount, "source": source, "rule": None, "balance": balance},
        )
        for tier in tiers:
            old, new = tier_level(tier, earned - amount)[0], tier_level(tier, earned)[0]
            if old != new:
                changed = {"tier": tier.code, "from": tier.levels[old].code}
                emit(pid, "tier.changed", {**changed, "to": tier.levels[new].code})
    return points
