"""Which rules a batch of facts triggers, and what each adds (pure, no I/O).

This is the part of the engine that runs per fact and per rule, so it is kept free of
I/O: it is property-tested and benchmarked alone (`make bench`). `apply` then writes its
result with a fixed number of statements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from bricqs.mechanics.conditions import NOBODY, Participant
from bricqs.mechanics.ruleset import CompiledPointsRule, CompiledStreak, RuleSet
from bricqs.mechanics.windows import buckets_for
from bricqs.schemas import Fact
from bricqs.storage.progress import ProgressDelta


class _Delta:
    # A plain class, not a dataclass: one is made per (criterion, participant, bucket) a
    # batch moves, and compiled (mypyc) only a plain class's constructor runs natively.
    __slots__ = ("count", "maximum", "reached", "total")

    def __init__(self, reached: datetime) -> None:
        self.count = 0
        self.total = 0.0
        self.maximum: float | None = None
        self.reached = reached


@dataclass
class Matches:
    """What a batch of facts does to criteria, points and streaks, before any I/O."""

    progress: list[ProgressDelta] = field(default_factory=list)
    distinct: list[tuple[str, str, str, str, datetime]] = field(default_factory=list)
    touched: dict[tuple[str, str], list[Fact]] = field(default_factory=dict)
    """(participant, criterion id) -> the facts that moved that criterion."""
    earned: list[tuple[CompiledPointsRule, Fact, int]] = field(default_factory=list)
    """Earn rules that fire, with the points before caps, in fact-time order."""
    streak_hits: list[tuple[CompiledStreak, Fact]] = field(default_factory=list)


def match_facts(
    rules: RuleSet, facts: Iterable[Fact], participants: dict[str, Participant] | None = None
) -> Matches:
    """Evaluate every rule indexed under each fact's type; `participants` (by id) are
    what conditions on `participant.` paths and segments read (else nobody's)."""
    result = Matches()
    deltas: dict[tuple[str, str, str], _Delta] = {}
    touched: dict[tuple[str, str], list[Fact]] = defaultdict(list)
    ordered = sorted(facts, key=lambda f: (f.occurred_at, f.fact_id))
    for fact in ordered:
        properties = fact.properties
        at = fact.occurred_at
        who = participants.get(fact.participant_id, NOBODY) if participants else NOBODY
        for criterion in rules.criteria_by_type.get(fact.fact_type, ()):
            if not criterion.matches.holds(properties, who):
                continue
            bucket = buckets_for(criterion.window, at)
            value = criterion.contribution(properties)
            if bucket is None or value is None:
                continue
            touched[(fact.participant_id, criterion.criterion_id)].append(fact)
            key = (criterion.criterion_id, fact.participant_id, bucket)
            if isinstance(value, str):
                # Distinct values are their own rows (criterion_distinct): a distinct
                # criterion has no progress row.
                result.distinct.append((*key, value, at))
                continue
            delta = deltas.get(key)
            if delta is None:
                delta = deltas[key] = _Delta(at)
            delta.count += 1
            if criterion.aggregate == "max":
                # The reach time of a maximum is when it was first reached.
                if delta.maximum is None or value > delta.maximum:
                    delta.maximum, delta.reached = value, at
                elif value == delta.maximum and at < delta.reached:
                    delta.reached = at
            else:
                if criterion.aggregate == "sum":
                    delta.total += value
                # A comparison, not max(): compiled, max() is a call through Python's
                # call protocol, per matching fact and criterion.
                if at > delta.reached:
                    delta.reached = at
        for rule in rules.points_by_type.get(fact.fact_type, ()):
            if rule.matches.holds(properties, who):
                amount = rule.amount(properties)
                if amount > 0:
                    result.earned.append((rule, fact, amount))
        for streak in rules.streaks_by_type.get(fact.fact_type, ()):
            if streak.matches.holds(properties, who):
                result.streak_hits.append((streak, fact))
    result.progress = [
        ProgressDelta(cid, pid, bucket, d.count, d.total, d.maximum, d.reached)
        for (cid, pid, bucket), d in deltas.items()
    ]
    result.touched = dict(touched)
    return result
