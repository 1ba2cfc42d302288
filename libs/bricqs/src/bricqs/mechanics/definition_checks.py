"""Validating mechanic definitions beyond their types: conditions, windows, time zones,
cross-field rules and the economy's kinds, each problem with its field path; and parsing
a definition into its schema with those errors."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from bricqs.mechanics.conditions import PARTICIPANT, leaves
from bricqs.mechanics.definitions import (
    Badge,
    Boost,
    Challenge,
    Code,
    Criterion,
    Definition,
    Leaderboard,
    PointsRule,
    Segment,
    Streak,
    Tier,
    Window,
)
from bricqs.validation import FieldError

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "exists", "contains")
MAX_CONDITION_DEPTH = 8
_PATH = re.compile(r"^[A-Za-z0-9_\-$]+(\.[A-Za-z0-9_\-$]+)*$")


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
