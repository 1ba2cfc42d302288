"""Compiled `where` conditions agree with a straightforward interpreter on random facts."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bricqs.mechanics.conditions import NOBODY, compile_condition
from bricqs.mechanics.definition_checks import condition_errors

MISSING = object()


def get(props: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(props, dict) and part in props:
            props = props[part]
        elif isinstance(props, list) and part.isdigit() and int(part) < len(props):
            props = props[int(part)]
        else:
            return MISSING
    return props


def same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a is not MISSING and a == b


def ordered(a: Any, b: Any) -> bool:
    numbers = (int, float)
    both_numbers = (
        isinstance(a, numbers)
        and not isinstance(a, bool)
        and isinstance(b, numbers)
        and not isinstance(b, bool)
    )
    return both_numbers or (isinstance(a, str) and isinstance(b, str))


def interpret(where: dict[str, Any], props: dict[str, Any]) -> bool:
    """The reference semantics, written for clarity rather than speed."""
    if "all" in where:
        return all(interpret(w, props) for w in where["all"])
    if "any" in where:
        return any(interpret(w, props) for w in where["any"])
    value, op, expected = get(props, where["path"]), where["op"], where.get("value")
    if op == "exists":
        return (value is not MISSING) == (True if expected is None else expected)
    if op == "eq":
        return same(value, expected)
    if op == "ne":
        return value is not MISSING and not same(value, expected)
    if op == "in":
        return any(same(value, e) for e in expected)
    if op == "nin":
        return value is not MISSING and not any(same(value, e) for e in expected)
    if op == "contains":
        if isinstance(value, str) and isinstance(expected, str):
            return expected in value
        return isinstance(value, list) and any(same(v, expected) for v in value)
    if not ordered(value, expected):
        return False
    return {
        "gt": value > expected,
        "gte": value >= expected,
        "lt": value < expected,
        "lte": value <= expected,
    }[op]


keys = st.sampled_from(["a", "b", "c"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(-3, 3, allow_nan=False)
    | st.sampled_from(["x", "y", "xy", ""])
)
values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=3), max_leaves=8
)
properties = st.dictionaries(keys, values, max_size=3)
paths = st.lists(keys | st.sampled_from(["0", "1"]), min_size=1, max_size=3).map(".".join)


def leaf() -> st.SearchStrategy[dict[str, Any]]:
    comparable = (
        st.integers(-3, 3) | st.floats(-3, 3, allow_nan=False) | st.sampled_from(["x", "xy"])
    )
    return st.one_of(
        st.builds(
            lambda p, o, v: {"path": p, "op": o, "value": v},
            paths,
            st.sampled_from(["eq", "ne", "contains"]),
            scalars,
        ),
        st.builds(
            lambda p, o, v: {"path": p, "op": o, "value": v},
            paths,
            st.sampled_from(["gt", "gte", "lt", "lte"]),
            comparable,
        ),
        st.builds(
            lambda p, o, v: {"path": p, "op": o, "value": v},
            paths,
            st.sampled_from(["in", "nin"]),
            st.lists(scalars, max_size=3),
        ),
        st.builds(lambda p, v: {"path": p, "op": "exists", "value": v}, paths, st.booleans()),
    )


conditions = st.recursive(
    leaf(),
    lambda c: st.builds(
        lambda k, items: {k: items},
        st.sampled_from(["all", "any"]),
        st.lists(c, min_size=1, max_size=3),
    ),
    max_leaves=6,
)


@settings(max_examples=500)
@given(where=conditions, props=properties)
def test_compiled_condition_agrees_with_the_interpreter(
    where: dict[str, Any], props: dict[str, Any]
) -> None:
    assert condition_errors(where, "where") == []
    assert compile_condition(where).holds(props, NOBODY) == interpret(where, props)


def test_readable_examples() -> None:
    big_usd = compile_condition(
        {
            "all": [
                {"path": "amount", "op": "gte", "value": 50},
                {"path": "currency", "op": "in", "value": ["USD", "EUR"]},
                {"path": "meta.coupon", "op": "exists", "value": False},
            ]
        }
    )
    assert big_usd.holds({"amount": 50, "currency": "USD"}, NOBODY)
    assert not big_usd.holds({"amount": 49.99, "currency": "USD"}, NOBODY)
    assert not big_usd.holds(
        {"amount": "60", "currency": "USD"}, NOBODY
    )  # a string is not a number
    assert not big_usd.holds({"amount": 60, "currency": "USD", "meta": {"coupon": "X"}}, NOBODY)
    vip = compile_condition({"path": "tags", "op": "contains", "value": "vip"})
    assert vip.holds({"tags": ["vip"]}, NOBODY)
    assert not compile_condition({"path": "flag", "op": "eq", "value": 1}).holds(
        {"flag": True}, NOBODY
    )


def test_order_operators_at_their_boundaries() -> None:
    # Random facts rarely land exactly on a bound, so each bound is checked here: a
    # strict comparison excludes it, an inclusive one takes it (numbers and strings).
    cases = {
        "gt": (False, True, False),
        "gte": (True, True, False),
        "lt": (False, False, True),
        "lte": (True, False, True),
    }
    for op, (at, above, below) in cases.items():
        number = compile_condition({"path": "n", "op": op, "value": 10})
        assert [number.holds({"n": v}, NOBODY) for v in (10, 10.5, 9)] == [at, above, below], op
        assert number.holds({"n": 10.0}, NOBODY) is at, op  # 10.0 is the bound 10
        text = compile_condition({"path": "s", "op": op, "value": "m"})
        assert [text.holds({"s": v}, NOBODY) for v in ("m", "n", "l")] == [at, above, below], op
        assert not number.holds({"n": "10"}, NOBODY) and not number.holds({}, NOBODY), op


@given(
    where=st.recursive(
        st.none() | st.integers() | st.text(max_size=5),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(["all", "any", "path", "op", "value", "x"]), c, max_size=3
            )
        ),
        max_leaves=10,
    )
)
def test_invalid_conditions_are_refused_with_field_paths_never_crash(where: Any) -> None:
    errors = condition_errors(where, "where")
    if not errors:  # anything accepted must compile and evaluate
        compile_condition(where).holds({"a": 1}, NOBODY)
    assert all(e.field.startswith("where") for e in errors)
