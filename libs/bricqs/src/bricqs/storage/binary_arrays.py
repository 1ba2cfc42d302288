"""Array parameters already in PostgreSQL's binary format, and psycopg's way to send them.

`arrays` encodes a batch's timestamp, float, integer, nullable text and JSON columns in
compiled code (psycopg's own list dumper is a Python loop per element). What it makes is
one of these classes: the bytes, and the array type they are. Each class has a dumper in
psycopg's global adapters, registered when this module is imported; a connection copies
the global adapters when it is first used, and `pools`, which makes every service's
connections, imports this module (as does `arrays`), so the dumpers are there first.

This module is plain Python (not compiled with the hot path): psycopg's `Dumper` is a
Python class, and its subclasses are too.
"""

from __future__ import annotations

from typing import ClassVar

import psycopg
from psycopg import postgres
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format


class EncodedArray:
    """An array in PostgreSQL's binary format (`data`), of the type `oid` names."""

    __slots__ = ("data",)
    oid: ClassVar[int]

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.data)} bytes)"


class Float8Array(EncodedArray):
    __slots__ = ()
    oid = postgres.types["float8"].array_oid


class Int4Array(EncodedArray):
    __slots__ = ()
    oid = postgres.types["int4"].array_oid


class TimestamptzArray(EncodedArray):
    __slots__ = ()
    oid = postgres.types["timestamptz"].array_oid


class TextArray(EncodedArray):
    __slots__ = ()
    oid = postgres.types["text"].array_oid


class JsonbArray(EncodedArray):
    __slots__ = ()
    oid = postgres.types["jsonb"].array_oid


class _EncodedArrayDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: EncodedArray) -> Buffer:
        return obj.data


for _kind in (Float8Array, Int4Array, TimestamptzArray, TextArray, JsonbArray):
    psycopg.adapters.register_dumper(
        _kind, type(f"{_kind.__name__}Dumper", (_EncodedArrayDumper,), {"oid": _kind.oid})
    )
