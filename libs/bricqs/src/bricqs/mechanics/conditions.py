"""Compiling `where` conditions into fast conditions over fact properties (pure).

A condition is compiled once, when a tenant's rules are loaded, into a tree of small
condition objects; evaluating it is then a method call per node, with no parsing or
dispatch on the operator name at run time. Comparisons between incomparable types are
false, never errors: a fact's properties are whatever the client sent.

A path starting with `participant.` reads the attributes of the participant the fact is
about instead of the fact's properties, and a leaf `{"segment": "vip"}` holds when the
participant is in that segment (see `Participant`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

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


class Condition:
    """A compiled condition: `holds(properties, participant)`.

    Conditions are small classes, not closures: compiled (mypyc), a method of a class is
    called directly, while a closure or lambda is called through Python's call protocol
    (matching evaluates a condition per rule per fact)."""

    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        """Whether the condition holds for a fact's properties and its participant."""
        raise NotImplementedError


class _Getter:
    """Reads one value for a leaf: a property of the fact or an attribute of the
    participant, at a plain name or a dotted path (MISSING when absent)."""

    def __init__(self, path: str) -> None:
        self.of_participant: Final = path.startswith(PARTICIPANT)
        self.path: Final = path.removeprefix(PARTICIPANT) if self.of_participant else path
        self.dotted: Final = "." in self.path

    def value(self, props: dict[str, Any], who: Participant) -> Any:
        source = who.attributes if self.of_participant else props
        if self.dotted:
            return lookup(source, self.path)
        return source.get(self.path, _MISSING)


class _Leaf(Condition):
    def __init__(self, path: str, expected: Any) -> None:
        self.get: Final = _Getter(path)
        self.expected: Final = expected


class _Exists(_Leaf):
    def __init__(self, path: str, expected: Any) -> None:
        super().__init__(path, expected)
        self.want: Final = True if expected is None else bool(expected)

    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        return (self.get.value(props, who) is not _MISSING) is self.want


class _Equal(_Leaf):
    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        return _equal(self.get.value(props, who), self.expected)


class _NotEqual(_Leaf):
    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        value = self.get.value(props, who)
        return value is not _MISSING and not _equal(value, self.expected)


class _In(_Leaf):
    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        value = self.get.value(props, who)
        return any(_equal(value, option) for option in self.expected)


class _NotIn(_Leaf):
    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        value = self.get.value(props, who)
        return value is not _MISSING and not any(_equal(value, o) for o in self.expected)


class _Contains(_Leaf):
    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        value = self.get.value(props, who)
        if isinstance(value, str) and isinstance(self.expected, str):
            return self.expected in value
        if isinstance(value, list):
            return any(_equal(item, self.expected) for item in value)
        return False


class _Ordered(_Leaf):
    """A comparison of order, strict unless `inclusive`."""

    def __init__(self, path: str, expected: Any, inclusive: bool) -> None:
        super().__init__(path, expected)
        self.inclusive: Final = inclusive


class _Above(_Ordered):
    """gt, or gte when `inclusive`."""

    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        value = self.get.value(props, who)
        if not _comparable(value, self.expected):
            return False
        return bool(value >= self.expected if self.inclusive else value > self.expected)


class _Below(_Ordered):
    """lt, or lte when `inclusive`."""

    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        value = self.get.value(props, who)
        if not _comparable(value, self.expected):
            return False
        return bool(value <= self.expected if self.inclusive else value < self.expected)


class _Always(Condition):
    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        return True


class _Group(Condition):
    def __init__(self, parts: list[Condition]) -> None:
        self.parts: Final = parts


class _All(_Group):
    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        return all(part.holds(props, who) for part in self.parts)


class _AnyOf(_Group):
    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        return any(part.holds(props, who) for part in self.parts)


class _InSegment(Condition):
    def __init__(self, code: str) -> None:
        self.code: Final = code

    def holds(self, props: dict[str, Any], who: Participant) -> bool:
        return self.code in who.segments


_LEAVES: Final[dict[str, type[_Leaf]]] = {
    "exists": _Exists,
    "eq": _Equal,
    "ne": _NotEqual,
    "in": _In,
    "nin": _NotIn,
    "contains": _Contains,
}


def _leaf(path: str, op: str, expected: Any) -> Condition:
    if op in ("gt", "gte"):
        return _Above(path, expected, inclusive=op == "gte")
    if op in ("lt", "lte"):
        return _Below(path, expected, inclusive=op == "lte")
    if op in ("in", "nin"):
        expected = list(expected)
    return _LEAVES[op](path, expected)


def compile_condition(where: dict[str, Any] | None) -> Condition:
    """A condition object for a validated condition (None matches everything)."""
    if where is None:
        return _Always()
    if "all" in where:
        parts = [compile_condition(item) for item in where["all"]]
        if len(parts) == 1:
            return parts[0]
        return _All(parts)
    if "any" in where:
        return _AnyOf([compile_condition(item) for item in where["any"]])
    if "segment" in where:
        return _InSegment(where["segment"])
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
