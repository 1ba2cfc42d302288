"""Compiling `where` conditions into fast predicates over fact properties (pure).

A condition is compiled once, when a tenant's rules are loaded, into nested closures;
evaluating it is then a few Python calls per leaf, with no parsing or dispatch on the
operator name at run time. Comparisons between incomparable types are false, never
errors: a fact's properties are whatever the client sent.

A path starting with `participant.` reads the attributes of the participant the fact is
about instead of the fact's properties, and a leaf `{"segment": "vip"}` holds when the
participant is in that segment (see `Participant`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

PARTICIPANT = "participant."
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Participant:
    """What a condition may read of the participant a fact is about: its attributes as
    they are when the fact is processed, and the segments those attributes put it in."""

    attributes: dict[str, Any]
    segments: frozenset[str] = frozenset()


NOBODY = Participant({})
"""A participant with no attributes and in no segment (rules that read none get it)."""

Predicate = Callable[[dict[str, Any], Participant], bool]
"""(fact properties, participant) -> whether the condition holds."""


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


def _getter(path: str) -> Callable[[dict[str, Any], Participant], Any]:
    if path.startswith(PARTICIPANT):
        name = path.removeprefix(PARTICIPANT)
        if "." not in name:
            return lambda props, who: who.attributes.get(name, _MISSING)
        return lambda props, who: lookup(who.attributes, name)
    if "." not in path:
        return lambda props, who: props.get(path, _MISSING)
    return lambda props, who: lookup(props, path)


def _leaf(path: str, op: str, expected: Any) -> Predicate:
    get = _getter(path)
    if op == "exists":
        want = True if expected is None else bool(expected)
        return lambda props, who: (get(props, who) is not _MISSING) is want
    if op == "eq":
        return lambda props, who: _equal(get(props, who), expected)
    if op == "ne":
        return lambda props, who: (v := get(props, who)) is not _MISSING and not _equal(v, expected)
    if op == "in":
        options = list(expected)
        return lambda props, who: any(_equal(get(props, who), o) for o in options)
    if op == "nin":
        options = list(expected)
        return lambda props, who: (
            (v := get(props, who)) is not _MISSING and not any(_equal(v, o) for o in options)
        )
    if op == "contains":

        def contains(props: dict[str, Any], who: Participant) -> bool:
            value = get(props, who)
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
    return lambda props, who: _comparable(v := get(props, who), expected) and compare(v, expected)


def compile_condition(where: dict[str, Any] | None) -> Predicate:
    """A predicate for a validated condition (None matches everything)."""
    if where is None:
        return lambda props, who: True
    if "all" in where:
        parts = [compile_condition(item) for item in where["all"]]
        if len(parts) == 1:
            return parts[0]
        return lambda props, who: all(p(props, who) for p in parts)
    if "any" in where:
        parts = [compile_condition(item) for item in where["any"]]
        return lambda props, who: any(p(props, who) for p in parts)
    if "segment" in where:
        code = where["segment"]
        return lambda props, who: code in who.segments
    return _leaf(where["path"], where["op"], where.get("value"))


def leaves(where: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Every leaf of a validated condition."""
    if where is None:
        return
    for group in ("all", "any"):
        if group in where:
            for item in where[group]:
                yield from leaves(item)
            return
    yield where


def reads_participant(where: dict[str, Any] | None) -> bool:
    """Whether a validated condition reads the participant (an attribute or a segment)."""
    return any("segment" in leaf or leaf["path"].startswith(PARTICIPANT) for leaf in leaves(where))
