"""Text and integer columns of a batch's rows as one parameter each.

A list bound as an array parameter is dumped element by element in Python (psycopg's
array dumper), which was most of what sending a batch's rows cost the processor. A column
of ids, names or JSON texts joined with a separator none of them holds is one string,
split back by PostgreSQL (`string_to_array`). A column that holds the separator (nothing
the engine makes does: ids and codes are generated or validated, JSON escapes control
characters), or of fewer than two values (one empty string would split into none), goes
as an array as before: `TEXTS` takes either, so a caller never has to know which.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

SEPARATOR = "\x1f"  # ASCII unit separator
TEXTS = "coalesce(%b::text[], string_to_array(%s, chr(31)))"
"""SQL for a text[] of the two parameters `texts()` gives."""


def texts(values: Sequence[str]) -> tuple[list[str] | None, str | None]:
    """The two parameters of `TEXTS` for `values` (none of them NULL)."""
    if len(values) > 1:
        joined = SEPARATOR.join(values)
        if joined.count(SEPARATOR) == len(values) - 1:
            return None, joined
    return list(values), None


def text_columns(rows: Sequence[tuple[Any, ...]], count: int) -> list[list[str] | str | None]:
    """The `TEXTS` parameters of the first `count` columns of `rows` (text columns),
    column by column."""
    return [part for i in range(count) for part in texts([row[i] for row in rows])]


def unnest_texts(count: int) -> str:
    """`count` TEXTS, comma-separated: the text columns' part of an unnest(...)."""
    return ", ".join([TEXTS] * count)


def integers_sql(sql_type: str) -> str:
    """SQL for an array of `sql_type` (int4, int8) from the parameter `integers()` gives."""
    return f"string_to_array(%s, ',')::{sql_type}[]"


def integers(values: Iterable[int]) -> str:
    """An integer column as one parameter: decimal digits never hold the comma."""
    return ",".join(map(str, values))
