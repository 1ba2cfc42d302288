"""Pure validation: never raises on any decoded JSON, and what it accepts can be queued
and stored (MessagePack round trip, no NUL, bounded depth)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from bricqs.schemas import Event
from bricqs.validation import MAX_PROPERTIES_DEPTH, parse_event

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=30,
)
NOW = datetime(2026, 11, 26, tzinfo=UTC)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@given(
    obj=json_values
    | st.fixed_dictionaries(
        {"event_name": st.text(max_size=5), "participant_id": st.text(max_size=5)},
        optional={"properties": json_values, "timestamp": st.text(max_size=25) | json_values},
    )
)
def test_parse_event_never_raises_and_accepted_events_are_storable(obj: Any) -> None:
    result = parse_event(obj, now=NOW, check_size=True)
    if isinstance(result, Event):
        encoded = msgspec.msgpack.encode(result.properties)
        assert msgspec.msgpack.decode(encoded) == result.properties
        assert b"\\u0000" not in msgspec.json.encode(result.properties)
        assert depth(result.properties) <= MAX_PROPERTIES_DEPTH
    else:
        assert result and all(e.field and e.code for e in result)


def test_the_guides_field_names_are_aliases_of_the_seed_names() -> None:
    aliased = parse_event(
        {
            "event_type": "level_up",
            "participant_id": "p",
            "attributes": {"level": 2},
            "occurred_at": "2026-11-25T10:00:00Z",
        },
        now=NOW,
    )
    assert aliased == Event(
        event_name="level_up",
        participant_id="p",
        properties={"level": 2},
        timestamp=datetime(2026, 11, 25, 10, tzinfo=UTC),
    )


def test_both_names_of_one_field_must_agree() -> None:
    same = {"event_name": "a", "event_type": "a", "participant_id": "p"}
    assert isinstance(parse_event(same, now=NOW), Event)
    errors = parse_event(
        {
            "event_name": "a",
            "event_type": "b",
            "participant_id": "p",
            "properties": {"x": 1},
            "attributes": {"x": 2},
        },
        now=NOW,
        prefix="events[2]",
    )
    assert isinstance(errors, list)
    assert {(e.field, e.code) for e in errors} == {
        ("events[2].event_type", "alias_conflict"),
        ("events[2].attributes", "alias_conflict"),
    }


def test_a_timestamp_that_leaves_the_calendar_in_utc_is_a_field_error() -> None:
    # Year 1 at +10:00 is year 0 in UTC, which Python's datetime cannot hold.
    errors = parse_event(
        {"event_name": "a", "participant_id": "p", "occurred_at": "0001-01-01T00:01:01+10:00"},
        now=NOW,
    )
    assert isinstance(errors, list)
    assert [(e.field, e.code) for e in errors] == [("occurred_at", "invalid_format")]
