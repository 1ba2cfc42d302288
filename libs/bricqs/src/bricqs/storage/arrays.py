"""Text and integer columns of a batch's rows as one parameter each.

A list bound as an array parameter is dumped element by element in Python (psycopg's
array dumper), which was most of what sending a batch's rows cost the processor. A column
of ids, names or JSON texts joined with a separator none of them holds is one string,
split back by PostgreSQL (`string_to_array`). A column that holds the separator (nothing
the engine makes does: ids and codes are generated or validated, JSON escapes control
characters), or of fewer than two values (one empty string would split into none), goes
as an array as before: `TEXTS` takes either, so a caller never has to know which.

Timestamp, float, small-integer, nullable text and JSON columns go as arrays in
PostgreSQL's binary format, encoded here (compiled) in one pass per column instead of by
psycopg's list dumper, element by element in Python: `float8_array` and its siblings
(`binary_arrays` tells psycopg how to send what they make). PostgreSQL reads the same
bytes either way.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg import postgres

from bricqs.schemas import json_encoder
from bricqs.storage.binary_arrays import (
    Float8Array,
    Int4Array,
    JsonbArray,
    TextArray,
    TimestamptzArray,
)

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


# PostgreSQL's binary array: a header (dimensions, whether any element is NULL, the
# element type), each dimension's length and lower bound, then each element as its length
# (-1: NULL) and its bytes, big-endian. Every array here has one dimension, from 1.
_HEADER = struct.Struct(">iiiii")
_EMPTY = struct.Struct(">iii")  # no dimension
_NULL = (-1).to_bytes(4, "big", signed=True)
_LENGTHS = tuple(n.to_bytes(4, "big") for n in range(1024))  # the usual ones, made once
_BIG_ENDIAN = sys.byteorder == "big"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # a timestamptz counts microseconds from it
_JSONB_VERSION = b"\x01"  # jsonb's binary form: a version byte, then the JSON text
_FLOAT8 = postgres.types["float8"].oid  # the element types
_INT4 = postgres.types["int4"].oid
_TEXT = postgres.types["text"].oid
_TIMESTAMPTZ = postgres.types["timestamptz"].oid
_JSONB = postgres.types["jsonb"].oid


def _fixed_width(element_type: int, typecode: str, values: list[Any]) -> bytes:
    """A binary array of fixed-width elements (an `array` typecode), None being NULL.

    Without NULLs every element takes the same room (its length, then its value), so
    the elements are laid out by strided slice assignments: C loops, none per element
    in Python."""
    count = len(values)
    if not count:
        return _EMPTY.pack(0, 0, element_type)
    if _has_null(values):
        return _with_nulls(element_type, typecode, values)
    data, size = _big_endian(typecode, values)
    stride = 4 + size
    out = bytearray(_HEADER.size + stride * count)
    _HEADER.pack_into(out, 0, 1, 0, element_type, count, 1)
    # Each element's length is `size` (< 256): the last of its 4 bytes, the rest zero.
    out[_HEADER.size + 3 :: stride] = bytes([size]) * count
    for byte in range(size):
        out[_HEADER.size + 4 + byte :: stride] = data[byte::size]
    return bytes(out)


def _big_endian(typecode: str, values: list[Any]) -> tuple[bytes, int]:
    """`values` packed one after another, big-endian, and the size of one."""
    packed = array(typecode, values)
    if not _BIG_ENDIAN:
        packed.byteswap()
    return packed.tobytes(), packed.itemsize


def _has_null(values: list[Any]) -> bool:
    # Not `None in values`: that compares each element with None by value (a float's or
    # an int's __eq__ each time), where an identity test is all it takes.
    return any(value is None for value in values)


def _with_nulls(element_type: int, typecode: str, values: list[Any]) -> bytes:
    """`_fixed_width`'s array when some elements are NULL (they take no room)."""
    data, size = _big_endian(typecode, [v for v in values if v is not None])
    length = _LENGTHS[size]
    parts = [_HEADER.pack(1, 1, element_type, len(values), 1)]
    start = 0
    for value in values:
        if value is None:
            parts.append(_NULL)
        else:
            parts.append(length)
            parts.append(data[start : start + size])
            start += size
    return b"".join(parts)


def _variable_width(element_type: int, values: list[bytes | None]) -> bytes:
    """A binary array of elements already in their binary form, None being NULL."""
    if not values:
        return _EMPTY.pack(0, 0, element_type)
    parts = [b""]
    has_null = 0
    for value in values:
        if value is None:
            parts.append(_NULL)
            has_null = 1
        else:
            size = len(value)
            parts.append(_LENGTHS[size] if size < 1024 else size.to_bytes(4, "big"))
            parts.append(value)
    parts[0] = _HEADER.pack(1, has_null, element_type, len(values), 1)
    return b"".join(parts)


def _microseconds(moment: datetime) -> int:
    """A timestamptz's value: microseconds since 2000-01-01 UTC (an aware `moment`)."""
    since = moment - _PG_EPOCH
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def float8_array(values: Sequence[float | None]) -> Float8Array:
    """A float8[] parameter (`%b::float8[]`); None is NULL."""
    return Float8Array(_fixed_width(_FLOAT8, "d", list(values)))


def int4_array(values: Sequence[int | None]) -> Int4Array:
    """An int4[] parameter (`%b::int4[]`); None is NULL."""
    return Int4Array(_fixed_width(_INT4, "i", list(values)))


def timestamptz_array(values: Sequence[datetime | None]) -> TimestamptzArray:
    """A timestamptz[] parameter (`%b::timestamptz[]`) of aware datetimes; None is NULL.

    A naive datetime is refused (TypeError), where psycopg would send it as a local
    time: nothing in the engine makes one, and guessing a zone would move it silently."""
    micros = [None if v is None else _microseconds(v) for v in values]
    return TimestamptzArray(_fixed_width(_TIMESTAMPTZ, "q", micros))


def text_array(values: Sequence[str | None]) -> TextArray:
    """A text[] parameter (`%b::text[]`) that may hold NULLs (`texts` for one that
    cannot)."""
    return TextArray(_variable_width(_TEXT, [None if v is None else v.encode() for v in values]))


def jsonb_array(values: Sequence[Any]) -> JsonbArray:
    """A jsonb[] parameter (`%b::jsonb[]`) of values msgspec encodes; None is NULL."""
    encoded: list[bytes | None] = [
        None if v is None else _JSONB_VERSION + json_encoder.encode(v) for v in values
    ]
    return JsonbArray(_variable_width(_JSONB, encoded))
