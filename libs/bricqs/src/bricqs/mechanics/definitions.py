"""Mechanic definitions (msgspec schemas); `definition_checks` validates them on write
with field-level errors.

Conditions (`where`) are JSON: a leaf `{"path": "amount", "op": "gte", "value": 10}`
(dotted paths reach into nested properties) or a group `{"all": [...]}` / `{"any": [...]}`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Code = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]
# PostgreSQL's text and jsonb refuse NUL characters: refused here, where a field error can say so.
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
# Why points moved or a claim was cancelled: free text, kept in the ledger and the audit.
Reason = Annotated[str, Meta(max_length=500, pattern=r"^[^\x00]*$")]
AttributeName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
FactType = Annotated[
    str, Meta(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]
Status = Literal["active", "paused", "archived"]
Period = Literal["day", "week", "month"]
Aggregate = Literal["count", "sum", "max", "distinct"]


class Window(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which facts count: a rolling number of days, a calendar period, or fixed bounds."""

    type: Literal["rolling", "calendar", "fixed"]
    days: Annotated[int, Meta(ge=1, le=3660)] | None = None
    period: Period | None = None
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None


class Trigger(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A fact type and an optional condition over its properties."""

    fact_type: FactType
    where: dict[str, Any] | None = None


class Criterion(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An aggregate over a participant's matching facts: count, sum, max or distinct values."""

    fact_type: FactType
    where: dict[str, Any] | None = None
    aggregate: Aggregate = "count"
    property: str | None = None
    window: Window | None = None


class Threshold(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A criterion and the value it must reach."""

    criterion: Criterion
    threshold: Annotated[float, Meta(gt=0)]


class Amount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fixed points, or a numeric property times a multiplier, rounded."""

    fixed: Annotated[int, Meta(ge=0)] | None = None
    property: str | None = None
    multiplier: float = 1.0
    rounding: Literal["floor", "round", "ceil"] = "floor"


class Cap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """At most `amount` points from one rule per participant and calendar period (UTC)."""

    amount: Annotated[int, Meta(ge=1)]
    period: Period


class PointsRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An earn rule: points for each matching fact."""

    code: Code
    name: Name
    trigger: Trigger
    amount: Amount
    description: str = ""
    status: Status = "active"
    cap: Cap | None = None
    expires_after_days: Annotated[int, Meta(ge=1, le=3660)] | None = None
    """The points of each credit expire this many days after the earning fact occurred
    (None: never)."""


class Badge(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Awarded when its criteria are met (all or any); once, or once per window period."""

    code: Code
    name: Name
    criteria: Annotated[list[Threshold], Meta(min_length=1, max_length=20)]
    combine: Literal["all", "any"] = "all"
    repeatable: bool = False
    description: str = ""
    status: Status = "active"


class Objective(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One goal of a challenge."""

    code: Code
    criterion: Criterion
    target: Annotated[float, Meta(gt=0)]


class Reward(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What completing a challenge gives."""

    points: Annotated[int, Meta(ge=0)] = 0
    badge: Code | None = None


class Challenge(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Objectives to meet, optionally within a window; completes when all are met."""

    code: Code
    name: Name
    objectives: Annotated[list[Objective], Meta(min_length=1, max_length=20)]
    window: Window | None = None
    reward: Reward | None = None
    description: str = ""
    status: Status = "active"


MAX_GRACE_HOURS = 72
"""The most hours a streak's periods may end late (`Streak.grace_hours`)."""


class Streak(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Consecutive periods with at least one matching fact."""

    code: Code
    name: Name
    trigger: Trigger
    period: Period = "day"
    timezone: str = "UTC"
    """An IANA zone, or "participant" for the participant's own `timezone` attribute."""
    grace_hours: Annotated[int, Meta(ge=0, le=MAX_GRACE_HOURS)] = 0
    description: str = ""
    status: Status = "active"
    freezes: StreakFreezes | None = None
    """Freezes that cover missed periods instead of breaking the run (docs/economy.md)."""
    at_risk_hours: Annotated[int, Meta(ge=1, le=168)] | None = None
    """Hours before a period ends at which `streak.at_risk` is emitted, when the run's
    participant has not been active in it yet; None emits none (docs/scheduler.md)."""


class StreakFreezes(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Freezes of a streak: an initial stock, one more every `every` active periods, at
    most `maximum` held; a missed period consumes one automatically."""

    initial: Annotated[int, Meta(ge=0, le=100)] = 0
    every: Annotated[int, Meta(ge=1, le=1000)] | None = None
    maximum: Annotated[int, Meta(ge=0, le=100)] = 2


class Leaderboard(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Participants ranked by points earned, or by a criterion's value, per period."""

    code: Code
    name: Name
    metric: Literal["points", "criterion"] = "points"
    criterion: Criterion | None = None
    period: Literal["all_time", "daily", "weekly", "monthly"] = "all_time"
    timezone: str = "UTC"
    group_by: AttributeName | None = None
    """A participant attribute (`team`, `country`…): each of its values ranks apart."""
    finished_top: Annotated[int, Meta(ge=0, le=100)] = 3
    """How many of a finished run's leaders get a `leaderboard.finished` fact."""
    description: str = ""
    status: Status = "active"


class TierLevel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One rung of a tier ladder."""

    code: Code
    name: Name
    min_points: Annotated[int, Meta(ge=0)]


class Tier(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A ladder of levels by lifetime points earned."""

    code: Code
    name: Name
    levels: Annotated[list[TierLevel], Meta(min_length=1, max_length=50)]
    description: str = ""
    status: Status = "active"


# ---------------------------------------------------------------------------------------
# Segments and boosts (the points economy, issue 18)

ParticipantId = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
MAX_BOOST_PARTICIPANTS = 1000
"""A boost names at most this many participants; larger groups are a segment."""


class Segment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A named condition over participant attributes (`participant.<attr>` paths), usable
    in any condition as `{"segment": code}` and as a boost's scope."""

    code: Code
    name: Name
    condition: dict[str, Any]
    description: str = ""
    status: Status = "active"


class Boost(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Points of earn rules multiplied for facts that occurred in [starts_at, ends_at),
    for everyone, a segment or named participants; overlapping boosts multiply."""

    code: Code
    name: Name
    multiplier: Annotated[float, Meta(gt=0, le=100)]
    starts_at: datetime
    ends_at: datetime
    scope: Literal["everyone", "segment", "participants"] = "everyone"
    segment: Code | None = None
    participants: Annotated[list[ParticipantId], Meta(max_length=MAX_BOOST_PARTICIPANTS)] = []
    rules: Annotated[list[Code], Meta(min_length=1, max_length=100)] | None = None
    """The points rules it multiplies (codes); None: every points rule."""
    rounding: Literal["floor", "round", "ceil"] = "floor"
    description: str = ""
    status: Status = "active"


Definition = PointsRule | Badge | Challenge | Streak | Leaderboard | Tier | Segment | Boost

# URL segment of the admin API -> (kind stored in the database, schema)
KINDS: dict[str, tuple[str, type[Definition]]] = {
    "points-rules": ("points_rule", PointsRule),
    "badges": ("badge", Badge),
    "challenges": ("challenge", Challenge),
    "streaks": ("streak", Streak),
    "leaderboards": ("leaderboard", Leaderboard),
    "tiers": ("tier", Tier),
    "segments": ("segment", Segment),
    "boosts": ("boost", Boost),
}
SCHEMA_BY_KIND: dict[str, type[Definition]] = {kind: schema for kind, schema in KINDS.values()}


# ---------------------------------------------------------------------------------------
# Points expiry


def points_expiry(rule: PointsRule, earned_at: datetime) -> datetime | None:
    """When the points a rule credits for a fact that occurred at `earned_at` expire."""
    if rule.expires_after_days is None:
        return None
    return earned_at + timedelta(days=rule.expires_after_days)
