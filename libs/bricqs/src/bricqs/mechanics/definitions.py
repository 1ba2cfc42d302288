"""Mechanic definitions (msgspec schemas), validated on write with field-level errors.

Conditions (`where`) are JSON: a leaf `{"path": "amount", "op": "gte", "value": 10}`
(dotted paths reach into nested properties) or a group `{"all": [...]}` / `{"any": [...]}`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta

from bricqs.mechanics.conditions import PARTICIPANT, leaves
from bricqs.validation import FieldError

Code = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]
# PostgreSQL's text and jsonb refuse NUL characters: refused here, where a field error can say so.
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
AttributeName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
FactType = Annotated[
    str, Meta(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]
Status = Literal["active", "paused", "archived"]
Period = Literal["day", "week", "month"]
Aggregate = Literal["count", "sum", "max", "distinct"]
OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "exists", "contains")
MAX_CONDITION_DEPTH = 8
_PATH = re.compile(r"^[A-Za-z0-9_\-$]+(\.[A-Za-z0-9_\-$]+)*$")


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


class Streak(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Consecutive periods with at least one matching fact."""

    code: Code
    name: Name
    trigger: Trigger
    period: Period = "day"
    timezone: str = "UTC"
    """An IANA zone, or "participant" for the participant's own `timezone` attribute."""
    grace_hours: Annotated[int, Meta(ge=0, le=72)] = 0
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
# Validation beyond types: conditions, windows, cross-field rules.


def condition_errors(where: Any, path: str, depth: int = 1) -> list[FieldError]:
    """Problems of a `where` condition, each with its field path."""
    if not isinstance(where, dict):
        return [FieldError(path, "must be an object", "invalid_type")]
    if depth > MAX_CONDITION_DEPTH:
        return [FieldError(path, f"must not nest deeper than {MAX_CONDITION_DEPTH}", "too_deep")]
    if "segment" in where:
        return _segment_reference_errors(where, path)
    groups = [k for k in ("all", "any") if k in where]
    if groups:
        if len(where) != 1:
            return [
                FieldError(path, "a group has exactly one key, 'all' or 'any'", "invalid_format")
            ]
        items = where[groups[0]]
        if not isinstance(items, list) or not items:
            return [FieldError(f"{path}.{groups[0]}", "must be a non-empty array", "invalid_type")]
        errors: list[FieldError] = []
        for i, item in enumerate(items):
            errors += condition_errors(item, f"{path}.{groups[0]}[{i}]", depth + 1)
        return errors
    errors = []
    unknown = set(where) - {"path", "op", "value"}
    if unknown:
        errors.append(FieldError(path, f"unknown keys: {sorted(unknown)}", "unknown_field"))
    if not isinstance(where.get("path"), str) or not _PATH.match(where["path"]):
        errors.append(
            FieldError(f"{path}.path", "must be a dotted property path", "invalid_format")
        )
    op = where.get("op")
    if op not in OPERATORS:
        errors.append(
            FieldError(f"{path}.op", f"must be one of {', '.join(OPERATORS)}", "invalid_choice")
        )
    elif op in ("in", "nin") and not isinstance(where.get("value"), list):
        errors.append(FieldError(f"{path}.value", f"'{op}' needs an array", "invalid_type"))
    elif op in ("gt", "gte", "lt", "lte") and (
        not isinstance(where.get("value"), int | float | str)
        or isinstance(where.get("value"), bool)
    ):
        errors.append(
            FieldError(f"{path}.value", f"'{op}' needs a number or string", "invalid_type")
        )
    elif op == "exists" and not isinstance(where.get("value", True), bool):
        errors.append(FieldError(f"{path}.value", "'exists' takes true or false", "invalid_type"))
    elif op not in ("exists",) and "value" not in where:
        errors.append(FieldError(f"{path}.value", "is required", "required"))
    return errors


def timezone_errors(name: str, path: str, *, allow_participant: bool = False) -> list[FieldError]:
    """The error of field `path` if `name` is no IANA time zone (nor "participant", when
    the participant's own zone may be asked for)."""
    if allow_participant and name == "participant":
        return []
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return [
            FieldError(path, "must be an IANA time zone such as Europe/Paris", "invalid_choice")
        ]
    return []


def _window_errors(window: Window | None, path: str) -> list[FieldError]:
    if window is None:
        return []
    errors: list[FieldError] = []
    if window.type == "rolling" and window.days is None:
        errors.append(FieldError(f"{path}.days", "a rolling window needs days", "required"))
    if window.type == "calendar" and window.period is None:
        errors.append(FieldError(f"{path}.period", "a calendar window needs a period", "required"))
    if window.type == "fixed":
        if window.start is None and window.end is None:
            errors.append(FieldError(path, "a fixed window needs start, end or both", "required"))
        if window.start and window.end and window.start >= window.end:
            errors.append(FieldError(f"{path}.end", "must be after start", "invalid_range"))
        for name in ("start", "end"):
            value = getattr(window, name)
            if value is not None and value.tzinfo is None:
                errors.append(
                    FieldError(f"{path}.{name}", "must carry a UTC offset", "invalid_format")
                )
    errors += timezone_errors(window.timezone, f"{path}.timezone")
    return errors


def _criterion_errors(criterion: Criterion, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if criterion.where is not None:
        errors += condition_errors(criterion.where, f"{path}.where")
    if criterion.aggregate != "count" and not criterion.property:
        errors.append(
            FieldError(f"{path}.property", f"'{criterion.aggregate}' needs a property", "required")
        )
    if criterion.property is not None and not _PATH.match(criterion.property):
        errors.append(
            FieldError(f"{path}.property", "must be a dotted property path", "invalid_format")
        )
    errors += _window_errors(criterion.window, f"{path}.window")
    return errors


def semantic_errors(definition: Definition) -> list[FieldError]:
    """Rules the types alone cannot say."""
    errors: list[FieldError] = []
    if isinstance(definition, PointsRule | Streak) and definition.trigger.where is not None:
        errors += condition_errors(definition.trigger.where, "trigger.where")
    if isinstance(definition, PointsRule):
        amount = definition.amount
        if (amount.fixed is None) == (amount.property is None):
            errors.append(FieldError("amount", "give either fixed or property", "invalid_format"))
        if amount.property is not None and not _PATH.match(amount.property):
            errors.append(
                FieldError("amount.property", "must be a dotted property path", "invalid_format")
            )
    elif isinstance(definition, Badge):
        for i, item in enumerate(definition.criteria):
            errors += _criterion_errors(item.criterion, f"criteria[{i}].criterion")
        if definition.repeatable and not any(
            t.criterion.window and t.criterion.window.type == "calendar"
            for t in definition.criteria
        ):
            errors.append(
                FieldError(
                    "repeatable",
                    "a repeatable badge needs a calendar window (it is awarded once per period)",
                    "invalid_combination",
                )
            )
    elif isinstance(definition, Challenge):
        codes = [o.code for o in definition.objectives]
        if len(set(codes)) != len(codes):
            errors.append(FieldError("objectives", "objective codes must be unique", "duplicate"))
        for i, objective in enumerate(definition.objectives):
            errors += _criterion_errors(objective.criterion, f"objectives[{i}].criterion")
            if objective.criterion.window is not None:
                errors.append(
                    FieldError(
                        f"objectives[{i}].criterion.window",
                        "set the window on the challenge",
                        "invalid_combination",
                    )
                )
        errors += _window_errors(definition.window, "window")
        if definition.window is not None and definition.window.type == "calendar":
            errors.append(
                FieldError(
                    "window.type", "a challenge window is rolling or fixed", "invalid_choice"
                )
            )
    elif isinstance(definition, Streak):
        errors += timezone_errors(definition.timezone, "timezone", allow_participant=True)
        freezes = definition.freezes
        if freezes is not None and freezes.initial > freezes.maximum:
            errors.append(FieldError("freezes.initial", "at most freezes.maximum", "invalid_range"))
    elif isinstance(definition, Leaderboard):
        if definition.metric == "criterion":
            if definition.criterion is None:
                errors.append(
                    FieldError("criterion", "a criterion leaderboard needs a criterion", "required")
                )
            else:
                errors += _criterion_errors(definition.criterion, "criterion")
                if definition.criterion.window is not None:
                    errors.append(
                        FieldError(
                            "criterion.window",
                            "the leaderboard period is the window",
                            "invalid_combination",
                        )
                    )
        elif definition.criterion is not None:
            errors.append(
                FieldError("criterion", "only for metric 'criterion'", "invalid_combination")
            )
        errors += timezone_errors(definition.timezone, "timezone")
    elif isinstance(definition, Segment | Boost):
        errors += _economy_errors(definition)
    elif isinstance(definition, Tier):
        levels = [level.min_points for level in definition.levels]
        if levels != sorted(levels) or len(set(levels)) != len(levels):
            errors.append(
                FieldError("levels", "min_points must strictly increase", "invalid_order")
            )
        if levels and levels[0] != 0:
            errors.append(
                FieldError("levels[0].min_points", "the first level starts at 0", "invalid_range")
            )
    return errors


def _msgspec_field_error(exc: msgspec.ValidationError) -> FieldError:
    message = str(exc)
    text, _, where = message.partition(" - at `$")
    field = where.rstrip("`").lstrip(".") or "body"
    code = (
        "required"
        if "missing required field" in text
        else ("unknown_field" if "unknown field" in text else "invalid_value")
    )
    if text.startswith("Object missing required field"):
        name = text.split("`")[1]
        field = f"{field}.{name}" if field != "body" else name
    if text.startswith("Object contains unknown field"):
        name = text.split("`")[1]
        field = f"{field}.{name}" if field != "body" else name
    return FieldError(field, text, code)


def parse_definition(schema: type[Definition], raw: Any) -> Definition | list[FieldError]:
    """A definition from decoded JSON, or its field-level errors."""
    try:
        definition = msgspec.convert(raw, schema)
    except msgspec.ValidationError as exc:
        return [_msgspec_field_error(exc)]
    errors = semantic_errors(definition)
    return errors or definition


# ---------------------------------------------------------------------------------------
# Points expiry


def points_expiry(rule: PointsRule, earned_at: datetime) -> datetime | None:
    """When the points a rule credits for a fact that occurred at `earned_at` expire."""
    if rule.expires_after_days is None:
        return None
    return earned_at + timedelta(days=rule.expires_after_days)


# ---------------------------------------------------------------------------------------
# Validation of segments and boosts


def _segment_reference_errors(where: dict[str, Any], path: str) -> list[FieldError]:
    if len(where) != 1:
        return [FieldError(path, "a segment reference has exactly one key", "invalid_format")]
    try:
        msgspec.convert(where["segment"], Code)
    except msgspec.ValidationError:
        return [FieldError(f"{path}.segment", "must be a segment code", "invalid_format")]
    return []


def _segment_condition_errors(where: Any, path: str) -> list[FieldError]:
    errors = condition_errors(where, path)
    if errors:
        return errors
    for leaf in leaves(where):
        if "segment" in leaf:
            errors.append(
                FieldError(path, "a segment cannot refer to a segment", "invalid_combination")
            )
        elif not leaf["path"].startswith(PARTICIPANT):
            errors.append(
                FieldError(
                    path,
                    f"paths are 'participant.<attribute>', not {leaf['path']!r}",
                    "invalid_format",
                )
            )
    return errors


def _economy_errors(definition: Segment | Boost) -> list[FieldError]:
    if isinstance(definition, Segment):
        return _segment_condition_errors(definition.condition, "condition")
    errors: list[FieldError] = []
    for name in ("starts_at", "ends_at"):
        if getattr(definition, name).tzinfo is None:
            errors.append(FieldError(name, "must carry a UTC offset", "invalid_format"))
    if not errors and definition.ends_at <= definition.starts_at:
        errors.append(FieldError("ends_at", "must be after starts_at", "invalid_range"))
    scoped = {
        "segment": definition.segment is not None,
        "participants": bool(definition.participants),
    }
    for field, given in scoped.items():
        if definition.scope == field and not given:
            errors.append(FieldError(field, f"scope '{field}' needs {field}", "required"))
        elif definition.scope != field and given:
            errors.append(FieldError(field, f"only with scope '{field}'", "invalid_combination"))
    return errors
