"""What a draft definition would have done over a participant's past facts (pure, no I/O).

The console's "what would this rule have done": the engine's own matching (`match_facts`)
and judging (`evaluation_points`, `values_at`) run over stored facts one at a time, in
fact-time order, as if each had just arrived, with the buckets kept in memory instead of
PostgreSQL. Only the draft is compiled, so what other definitions would have added (a
challenge's reward, points caps already spent) is not part of it; caps are not applied.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from bricqs.mechanics.definitions import Badge, Challenge, Definition, Streak
from bricqs.mechanics.evaluation import evaluation_points, values_at
from bricqs.mechanics.matching import match_facts
from bricqs.mechanics.ruleset import CompiledCriterion, RuleSet
from bricqs.mechanics.windows import period_key
from bricqs.schemas import Fact
from bricqs.storage.progress import BucketValue

MAX_FACTS = 500
"""The most facts one preview runs over (the console reads no more)."""


@dataclass(frozen=True)
class Goal:
    """One badge criterion or challenge objective, with the value it must reach."""

    label: str
    criterion: CompiledCriterion
    target: float


@dataclass
class FactEffect:
    """What the draft does with one fact it looks at."""

    fact: Fact
    points: int = 0
    """Points the fact would earn (before any cap)."""
    values: dict[str, float] = field(default_factory=dict)
    """Goal label -> its best value at the points this fact is judged at."""
    reached: bool = False
    """The badge or challenge would be reached at this fact (the first time only)."""
    streak_period: str | None = None
    """The streak period this fact would count for."""


@dataclass
class Preview:
    """What the draft would have done over the facts."""

    effects: list[FactEffect] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    points: int = 0
    reached_by: Fact | None = None
    streak_periods: list[str] = field(default_factory=list)
    """The distinct periods with a qualifying fact, oldest first."""


def _goals(definition: Definition, rules: RuleSet) -> list[Goal]:
    if isinstance(definition, Badge):
        badge = rules.badges[definition.code]
        return [
            Goal(f"criteria[{n}]", t.criterion, t.threshold) for n, t in enumerate(badge.thresholds)
        ]
    if isinstance(definition, Challenge):
        challenge = rules.challenges[definition.code]
        return [Goal(o.code, o.criterion, o.target) for o in challenge.objectives]
    return []


def _reached(definition: Definition, met: list[set[str]]) -> bool:
    """As the engine judges: each badge criterion in any of its windows, every objective of
    a challenge within one same window (they share the challenge's)."""
    if isinstance(definition, Badge):
        return (all if definition.combine == "all" else any)(met)
    return bool(set.intersection(*met))


def preview(definition: Definition, facts: Sequence[Fact]) -> Preview:
    """Run `definition` (whatever its status) over `facts` of one participant."""
    rules = RuleSet.compile([msgspec.structs.replace(definition, status="active")])
    result = Preview(goals=_goals(definition, rules))
    progress: dict[tuple[str, str, str], BucketValue] = {}
    distinct: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    periods: dict[str, None] = {}
    for fact in sorted(facts, key=lambda f: (f.occurred_at, f.fact_id)):
        matched = match_facts(rules, [fact])
        if not (matched.earned or matched.touched or matched.streak_hits):
            continue
        effect = FactEffect(fact, points=sum(amount for _, _, amount in matched.earned))
        for delta in matched.progress:
            key = (delta.criterion_id, delta.participant_id, delta.bucket)
            old = progress.get(key, BucketValue(0, 0.0, None))
            maxima = [m for m in (old.max, delta.max) if m is not None]
            progress[key] = BucketValue(
                old.facts + delta.facts, old.sum + delta.sum, max(maxima) if maxima else None
            )
        for cid, pid, bucket, value, _ in matched.distinct:
            distinct[(cid, pid, bucket)].add(value)
        met: list[set[str]] = []
        for goal in result.goals:
            points = evaluation_points(goal.criterion.window, [fact.occurred_at])
            values = values_at(goal.criterion, fact.participant_id, points, progress, distinct)
            effect.values[goal.label] = max(values.values(), default=0.0)
            met.append({label for label, value in values.items() if value >= goal.target})
        if met and result.reached_by is None and _reached(definition, met):
            effect.reached, result.reached_by = True, fact
        for streak, hit in matched.streak_hits:
            effect.streak_period = period_key(
                hit.occurred_at, streak.streak.period, streak.streak.timezone
            )
            periods[effect.streak_period] = None
        result.points += effect.points
        result.effects.append(effect)
    if isinstance(definition, Streak):
        result.streak_periods = sorted(periods)
    return result
