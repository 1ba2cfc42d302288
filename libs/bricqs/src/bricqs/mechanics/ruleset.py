"""A tenant's active definitions compiled into callables and indexed by fact type (pure).

`RuleSet.compile(definitions)` runs once per definition change; for each fact the engine
then looks up only the rules indexed under the fact's type.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bricqs.mechanics.boosts import CompiledBoost, round_points
from bricqs.mechanics.conditions import Condition, compile_condition, is_missing, lookup
from bricqs.mechanics.definitions import (
    Badge,
    Boost,
    Challenge,
    Criterion,
    Definition,
    Leaderboard,
    PointsRule,
    Segment,
    Streak,
    Tier,
    Window,
)
from bricqs.mechanics.segments import reads_participants

_canonical = msgspec.json.Encoder(order="sorted")
LEADERBOARD_PERIODS = {"daily": "day", "weekly": "week", "monthly": "month"}


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@dataclass(frozen=True)
class CompiledCriterion:
    """A criterion ready to evaluate; `criterion_id` is a digest of its content."""

    criterion_id: str
    fact_type: str
    aggregate: str
    property: str | None
    window: Window | None
    matches: Condition

    @classmethod
    def build(cls, criterion: Criterion, window: Window | None = None) -> CompiledCriterion:
        """Compile `criterion`; `window` (a challenge's or leaderboard's) replaces its own."""
        effective = msgspec.structs.replace(criterion, window=window or criterion.window)
        digest = hashlib.blake2b(_canonical.encode(effective), digest_size=12).hexdigest()
        return cls(
            criterion_id="c_" + digest,
            fact_type=criterion.fact_type,
            aggregate=criterion.aggregate,
            property=criterion.property,
            window=effective.window,
            matches=compile_condition(criterion.where),
        )

    def contribution(self, properties: dict[str, Any]) -> float | str | None:
        """What one matching fact adds: 1 for count, a number for sum/max, a key for
        distinct; None when the fact lacks a usable value (it then does not count)."""
        if self.aggregate == "count":
            return 1.0
        assert self.property is not None
        value = lookup(properties, self.property)
        if is_missing(value):
            return None
        if self.aggregate == "distinct":
            return _canonical.encode(value).decode()
        return _number(value)


@dataclass(frozen=True)
class CompiledPointsRule:
    """An earn rule ready to apply."""

    rule: PointsRule
    matches: Condition

    def amount(self, properties: dict[str, Any]) -> int:
        """Points this fact earns before any cap (0 when the property is unusable)."""
        spec = self.rule.amount
        if spec.fixed is not None:
            return spec.fixed
        assert spec.property is not None
        value = _number(lookup(properties, spec.property))
        if value is None:
            return 0
        return round_points(value * spec.multiplier, spec.rounding)


@dataclass(frozen=True)
class CompiledThreshold:
    """One criterion of a badge with its threshold."""

    criterion: CompiledCriterion
    threshold: float


@dataclass(frozen=True)
class CompiledBadge:
    """A badge with compiled criteria."""

    badge: Badge
    thresholds: tuple[CompiledThreshold, ...]

    @property
    def period_window(self) -> Window | None:
        """The calendar window that makes a repeatable badge once-per-period."""
        if not self.badge.repeatable:
            return None
        return next(
            t.criterion.window
            for t in self.thresholds
            if t.criterion.window and t.criterion.window.type == "calendar"
        )


@dataclass(frozen=True)
class CompiledObjective:
    """One objective of a challenge."""

    code: str
    criterion: CompiledCriterion
    target: float


@dataclass(frozen=True)
class CompiledChallenge:
    """A challenge with compiled objectives (the challenge window folded into each)."""

    challenge: Challenge
    objectives: tuple[CompiledObjective, ...]


@dataclass(frozen=True)
class CompiledStreak:
    """A streak with its compiled trigger."""

    streak: Streak
    matches: Condition


@dataclass(frozen=True)
class CompiledLeaderboard:
    """A leaderboard; criterion ones keep their criterion compiled with the period window."""

    leaderboard: Leaderboard
    criterion: CompiledCriterion | None


@dataclass
class RuleSet:
    """Everything active for one tenant, indexed for the engine."""

    version: int = 0
    points_by_type: dict[str, list[CompiledPointsRule]] = field(
        default_factory=lambda: defaultdict(list)
    )
    criteria_by_type: dict[str, list[CompiledCriterion]] = field(
        default_factory=lambda: defaultdict(list)
    )
    badges_by_criterion: dict[str, list[CompiledBadge]] = field(
        default_factory=lambda: defaultdict(list)
    )
    challenges_by_criterion: dict[str, list[CompiledChallenge]] = field(
        default_factory=lambda: defaultdict(list)
    )
    streaks_by_type: dict[str, list[CompiledStreak]] = field(
        default_factory=lambda: defaultdict(list)
    )
    badges: dict[str, CompiledBadge] = field(default_factory=dict)
    challenges: dict[str, CompiledChallenge] = field(default_factory=dict)
    streaks: dict[str, CompiledStreak] = field(default_factory=dict)
    leaderboards: dict[str, CompiledLeaderboard] = field(default_factory=dict)
    tiers: list[Tier] = field(default_factory=list)
    segments: dict[str, Condition] = field(default_factory=dict)
    """Segment code -> its condition (called with no fact properties)."""
    boosts: list[CompiledBoost] = field(default_factory=list)
    reads_participants: bool = False
    """Whether some rule reads participants' attributes or segments: only then are the
    attributes of a batch's participants read."""

    @classmethod
    def compile(cls, definitions: Iterable[Definition], version: int = 0) -> RuleSet:
        """Compile the active definitions among `definitions`."""
        rules = cls(version=version)
        criteria: dict[str, CompiledCriterion] = {}

        def add_criterion(compiled: CompiledCriterion) -> CompiledCriterion:
            if compiled.criterion_id not in criteria:
                criteria[compiled.criterion_id] = compiled
                rules.criteria_by_type[compiled.fact_type].append(compiled)
            return criteria[compiled.criterion_id]

        for definition in definitions:
            if definition.status != "active":
                continue
            rules.reads_participants |= reads_participants(definition)
            if isinstance(definition, PointsRule):
                rules.points_by_type[definition.trigger.fact_type].append(
                    CompiledPointsRule(definition, compile_condition(definition.trigger.where))
                )
            elif isinstance(definition, Badge):
                badge = CompiledBadge(
                    definition,
                    tuple(
                        CompiledThreshold(
                            add_criterion(CompiledCriterion.build(t.criterion)), t.threshold
                        )
                        for t in definition.criteria
                    ),
                )
                rules.badges[definition.code] = badge
                for threshold in badge.thresholds:
                    rules.badges_by_criterion[threshold.criterion.criterion_id].append(badge)
            elif isinstance(definition, Challenge):
                challenge = CompiledChallenge(
                    definition,
                    tuple(
                        CompiledObjective(
                            o.code,
                            add_criterion(CompiledCriterion.build(o.criterion, definition.window)),
                            o.target,
                        )
                        for o in definition.objectives
                    ),
                )
                rules.challenges[definition.code] = challenge
                for objective in challenge.objectives:
                    rules.challenges_by_criterion[objective.criterion.criterion_id].append(
                        challenge
                    )
            elif isinstance(definition, Streak):
                streak = CompiledStreak(definition, compile_condition(definition.trigger.where))
                rules.streaks[definition.code] = streak
                rules.streaks_by_type[definition.trigger.fact_type].append(streak)
            elif isinstance(definition, Leaderboard):
                compiled = None
                if definition.metric == "criterion" and definition.criterion is not None:
                    period = LEADERBOARD_PERIODS.get(definition.period)
                    window = (
                        Window(
                            type="calendar",
                            period=period,  # type: ignore[arg-type]
                            timezone=definition.timezone,
                        )
                        if period
                        else None
                    )
                    compiled = add_criterion(CompiledCriterion.build(definition.criterion, window))
                rules.leaderboards[definition.code] = CompiledLeaderboard(definition, compiled)
            elif isinstance(definition, Tier):
                rules.tiers.append(definition)
            elif isinstance(definition, Segment):
                rules.segments[definition.code] = compile_condition(definition.condition)
            elif isinstance(definition, Boost):
                rules.boosts.append(CompiledBoost.build(definition))
        return rules

    def is_empty_for(self, fact_type: str) -> bool:
        """Whether no rule at all looks at facts of this type."""
        return not (
            self.points_by_type.get(fact_type)
            or self.criteria_by_type.get(fact_type)
            or self.streaks_by_type.get(fact_type)
        )


def tier_level(tier: Tier, lifetime_points: int) -> tuple[int, int | None]:
    """(index of the level reached, points to the next level or None at the top)."""
    index = 0
    for i, level in enumerate(tier.levels):
        if lifetime_points >= level.min_points:
            index = i
    following = tier.levels[index + 1] if index + 1 < len(tier.levels) else None
    return index, (following.min_points - lifetime_points) if following else None
