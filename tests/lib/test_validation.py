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
