"""Text and integer columns sent as one joined string (storage/arrays.py) come back as the very
values, in order, whatever they hold."""

from __future__ import annotations

import psycopg
import pytest

from bricqs.storage.arrays import TEXTS, integers, integers_sql, text_columns, texts
from bricqs_devstack.servers import Server


@pytest.mark.parametrize(
    "values",
    [
        [],
        [""],
        ["only"],
        ["a", "", "b", ""],
        ["", ""],
        ["fact_01", '{"k": "\\u001f"}', "été", "x,y", '"quoted"', "{braces}", "NULL"],
        ["holds\x1fthe separator", "b"],
        ["\x1f", "\x1f\x1f"],
    ],
)
def test_a_text_column_round_trips_exactly(postgres_server: Server, values: list[str]) -> None:
    with psycopg.connect(postgres_server.url) as db:
        row = db.execute(
            f"SELECT coalesce(array_agg(v ORDER BY n), '{{}}') FROM unnest({TEXTS})"  # noqa: S608
            " WITH ORDINALITY AS t(v, n)",
            texts(values),
        ).fetchone()
    assert row is not None
    assert row[0] == values


def test_values_without_the_separator_go_as_one_string() -> None:
    assert texts(["a", "b"]) == (None, "a\x1fb")
    # Holding the separator, or too short to split unambiguously: an array.
    assert texts(["a\x1f", "b"]) == (["a\x1f", "b"], None)
    assert texts([""]) == ([""], None)


def test_the_leading_columns_of_rows_go_column_by_column() -> None:
    rows = [("c1", "ann", 3), ("c2", "bob\x1f", 4)]
    assert text_columns(rows, 2) == [None, "c1\x1fc2", ["ann", "bob\x1f"], None]


@pytest.mark.parametrize("values", [[], [0], [-3, 9_007_199_254_740_993, 7], [2**63 - 1, -(2**63)]])
def test_an_integer_column_round_trips_exactly(postgres_server: Server, values: list[int]) -> None:
    with psycopg.connect(postgres_server.url) as db:
        row = db.execute(
            f"SELECT coalesce(array_agg(v ORDER BY n), '{{}}') FROM unnest({integers_sql('int8')})"  # noqa: S608
            " WITH ORDINALITY AS t(v, n)",
            (integers(values),),
        ).fetchone()
    assert row is not None
    assert row[0] == values
