"""Compiling `where` conditions into fast predicates over fact properties (pure).

A condition is compiled once, when a tenant's rules are loaded, into nested closures;
evaluating it is then a few Python calls per leaf, with no parsing or dispatch on the
operator name at run time. Comparisons between incomparable types are false, never
errors: a fact's properties are whatever the client sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]
_MISSING = object()


def lookup(properties: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, or the module's MISSING marker."""
    value: Any = properties
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return _MISSING
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def is_missing(value: Any) -> bool:
    """Whether `lookup` found nothing."""
    return value is _MISSING


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparable(a: Any, b: Any) -> bool:
    return (_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str))


def _equal(a: Any, b: Any) -> bool:
    # JSON semantics: true is not 1, and 1 equals 1.0.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _leaf(path: str, op: str, expected: Any) -> Predicate:
    parts = path.split(".")
    simple = len(parts) == 1

    def get(props: dict[str, Any]) -> Any:
        return props.get(path, _MISSING) if simple else lookup(props, path)

    if op == "exists":
        want = True if expected is None else bool(expected)
        return lambda props: (get(props) is not _MISSING) is want
    if op == "eq":
        return lambda props: _equal(get(props), expected)
    if op == "ne":
        return lambda props: (v := get(props)) is not _MISSING and not _equal(v, expected)
    if op == "in":
        options = list(expected)
        return lambda props: any(_equal(get(props), o) for o in options)
    if op == "nin":
        options = list(expected)
        return lambda props: (
            (v := get(props)) is not _MISSING and not any(_equal(v, o) for o in options)
        )
    if op == "contains":

        def contains(props: dict[str, Any]) -> bool:
            value = get(props)
            if isinstance(value, str) and isinstance(expected, str):
                return expected in value
            if isinstance(value, list):
                return any(_equal(item, expected) for item in value)
            return False

        return contains
    compare: Callable[[Any, Any], bool] = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }[op]
    return lambda props: _comparable(v := get(props), expected) and compare(v, expected)


def compile_condition(where: dict[str, Any] | None) -> Predicate:
    """A predicate for a validated condition (None matches everything)."""
    if where is None:
        return lambda props: True
    if "all" in where:
        parts = [compile_condition(item) for item in where["all"]]
        if len(parts) == 1:
            return parts[0]
        return lambda props: all(p(props) for p in parts)
    if "any" in where:
        parts = [compile_condition(item) for item in where["any"]]
        return lambda props: any(p(props) for p in parts)
    return _leaf(where["path"], where["op"], where.get("value"))
