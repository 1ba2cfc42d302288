"""Timestamp, float, integer, nullable text and JSON columns encoded in PostgreSQL's binary
array format by storage/arrays.py come back from PostgreSQL as the very values, in order,
NULLs where they were, and typed as the array type they claim."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from bricqs.storage.arrays import (
    float8_array,
    int4_array,
    jsonb_array,
    text_array,
    timestamptz_array,
)
from bricqs_devstack.servers import Server

KOLKATA = timezone(timedelta(hours=5, minutes=30))
MOMENT = datetime(2026, 11, 30, 12, 0, 1, 123_456, tzinfo=UTC)

TYPE_NAMES = {
    "float8": "double precision[]",
    "int4": "integer[]",
    "timestamptz": "timestamp with time zone[]",
    "text": "text[]",
    "jsonb": "jsonb[]",
}
CASES: list[tuple[str, Callable[[Sequence[Any]], Any], list[Any]]] = [
    ("float8", float8_array, []),
    ("float8", float8_array, [1.5]),
    ("float8", float8_array, [1.5, -2.25, 0.1, 1e300, -0.0, float("inf"), 5e-324]),
    ("float8", float8_array, [None, 2.0, None, None, 3.5, None]),
    ("int4", int4_array, [0, -1, 2**31 - 1, -(2**31)]),
    ("int4", int4_array, [7, None, 8]),
    ("timestamptz", timestamptz_array, [MOMENT]),
    (
        "timestamptz",
        timestamptz_array,
        [
            MOMENT,
            datetime(2000, 1, 1, tzinfo=UTC),  # PostgreSQL's epoch: zero
            datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # just before it
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
            datetime(2026, 3, 1, 1, 2, 3, 4, tzinfo=KOLKATA),  # another zone, same instant
        ],
    ),
    ("timestamptz", timestamptz_array, [None, MOMENT, None]),
    ("text", text_array, ["a", "", "été 😀", "x" * 5_000, "NULL", '{"q": "\\u001f"}']),
    ("text", text_array, [None, "b", None]),
    ("text", text_array, [None]),
    ("jsonb", jsonb_array, [None, {"a": [1, 2.5, "x", None, True]}, [], "s", 0]),
]


@pytest.mark.parametrize(("sql_type", "encode", "values"), CASES)
def test_a_binary_column_round_trips_exactly(
    postgres_server: Server,
    sql_type: str,
    encode: Callable[[Sequence[Any]], Any],
    values: list[Any],
) -> None:
    with psycopg.connect(postgres_server.url) as db:
        row = db.execute(
            f"SELECT coalesce(array_agg(v ORDER BY n), '{{}}'), pg_typeof(%b)::text"  # noqa: S608
            f" FROM unnest(%b::{sql_type}[]) WITH ORDINALITY AS t(v, n)",
            (encode(values), encode(values)),
        ).fetchone()
    assert row is not None
    assert row[0] == values
    # Sent as its array type, not as bytes to convert: the cast in the SQL changes nothing.
    assert row[1] == TYPE_NAMES[sql_type]


def test_a_long_column_keeps_every_element_in_place(postgres_server: Server) -> None:
    """A batch-sized column, laid out by strided slices, with and without NULLs."""
    moments = [MOMENT + timedelta(microseconds=7 * i) for i in range(5_000)]
    floats = [i / 3 for i in range(5_000)]
    with_nulls = [None if i % 7 == 0 else x for i, x in enumerate(floats)]
    with psycopg.connect(postgres_server.url) as db:
        row = db.execute(
            "SELECT %b::timestamptz[], %b::float8[], %b::float8[]",
            (timestamptz_array(moments), float8_array(floats), float8_array(with_nulls)),
        ).fetchone()
    assert row == (moments, floats, with_nulls)


def test_a_naive_datetime_is_refused_not_guessed() -> None:
    with pytest.raises(TypeError):
        timestamptz_array([MOMENT, datetime(2026, 1, 1)])  # a naive one: the point
