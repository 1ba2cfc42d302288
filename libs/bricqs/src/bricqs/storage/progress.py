"""Criterion progress: counts, sums and maxima per bucket, and distinct values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from bricqs.storage.arrays import (
    SEPARATOR,
    float8_array,
    integers,
    integers_sql,
    text_columns,
    texts,
    timestamptz_array,
    unnest_texts,
)
from bricqs.storage.tenants import Conn, Tenant


class ProgressDelta:
    """What a batch adds to one (criterion, participant, bucket).

    A plain class: thousands are made per batch, and compiled (mypyc) a plain class is
    built natively, while a NamedTuple's generated constructor runs as interpreted Python
    (about a tenth of matching's instructions, measured with callgrind).
    """

    __slots__ = ("bucket", "criterion_id", "facts", "max", "participant_id", "reached_at", "sum")

    def __init__(
        self,
        criterion_id: str,
        participant_id: str,
        bucket: str,
        facts: int,
        sum: float,
        max: float | None,
        reached_at: datetime,
    ) -> None:
        self.criterion_id: Final = criterion_id
        self.participant_id: Final = participant_id
        self.bucket: Final = bucket
        self.facts: Final = facts
        """How many facts it adds."""
        self.sum: Final = sum
        self.max: Final = max
        self.reached_at: Final = reached_at


class BucketValue:
    """A stored bucket of one criterion for one participant (what judging reads of it).

    A plain class: a batch reads about four per event, and compiled (mypyc) a plain class
    is built natively, while a NamedTuple's or a dataclass's generated constructor runs as
    interpreted Python."""

    __slots__ = ("facts", "max", "sum")

    def __init__(self, facts: int, sum: float, max: float | None) -> None:
        self.facts = facts  # how many facts it counts
        self.sum = sum
        self.max = max

    def __repr__(self) -> str:
        return f"BucketValue(facts={self.facts}, sum={self.sum}, max={self.max})"


_UPSERT_PROGRESS = f"""
    INSERT INTO criterion_progress AS c (project_id, environment, criterion_id,
        participant_id, bucket, count, sum, max, reached_at)
    SELECT %s, %s, * FROM unnest({unnest_texts(3)}, {integers_sql("int8")},
                                 %b::float8[], %b::float8[], %b::timestamptz[])
    ON CONFLICT (project_id, environment, criterion_id, participant_id, bucket) DO UPDATE SET
"""  # noqa: S608 - fixed SQL fragments, never input
_ADD_PROGRESS = (
    _UPSERT_PROGRESS
    + """
        count = c.count + EXCLUDED.count,
        sum = c.sum + EXCLUDED.sum,
        max = GREATEST(c.max, EXCLUDED.max),
        reached_at = CASE
            WHEN EXCLUDED.max IS NOT NULL AND c.max IS NOT NULL AND EXCLUDED.max < c.max
                THEN c.reached_at
            WHEN EXCLUDED.max IS NOT NULL AND EXCLUDED.max = c.max
                THEN LEAST(c.reached_at, EXCLUDED.reached_at)
            ELSE GREATEST(c.reached_at, EXCLUDED.reached_at) END
    """
)
_REPLACE_PROGRESS = (
    _UPSERT_PROGRESS
    + """
        count = EXCLUDED.count, sum = EXCLUDED.sum, max = EXCLUDED.max,
        reached_at = EXCLUDED.reached_at
    """
)


def _progress_rows(tenant: Tenant, deltas: Sequence[ProgressDelta]) -> tuple[Any, ...]:
    """The parameters of `_UPSERT_PROGRESS`: one array per column, rows in key order."""
    # One string per row, not a tuple: two strings compare with one memcmp, two tuples
    # with an equality test per column first. The separator (a control character) sorts
    # below any character ids and bucket names may hold, so the order is the key's.
    rows = sorted(
        deltas, key=lambda d: SEPARATOR.join((d.criterion_id, d.participant_id, d.bucket))
    )
    return (
        tenant.project_id,
        tenant.environment,
        *texts([d.criterion_id for d in rows]),
        *texts([d.participant_id for d in rows]),
        *texts([d.bucket for d in rows]),
        integers([d.facts for d in rows]),
        # Binary arrays hold one type: an integer maximum goes as a float too.
        float8_array([float(d.sum) for d in rows]),
        float8_array([None if d.max is None else float(d.max) for d in rows]),
        timestamptz_array([d.reached_at for d in rows]),
    )


class WrittenBuckets:
    """The buckets an `add_progress` wrote, as they are now (by criterion, participant,
    bucket): what `read_buckets` would read of them in this transaction, which holds
    their rows' locks until it ends. `keys` are known at once; `values()` reads the
    statement's result, so in pipeline mode nothing waits for it until it is wanted."""

    def __init__(self, keys: set[tuple[str, str, str]], cursor: Any = None) -> None:
        self.keys = keys
        self._cursor = cursor

    async def values(self) -> dict[tuple[str, str, str], BucketValue]:
        """The written buckets' values (waits for the statement)."""
        if self._cursor is None:
            return {}
        rows = await self._cursor.fetchall()
        return {(r[0], r[1], r[2]): BucketValue(r[3], r[4], r[5]) for r in rows}


async def add_progress(
    conn: Conn, tenant: Tenant, deltas: Sequence[ProgressDelta]
) -> WrittenBuckets:
    """Add counts and sums, raise maxima: commutative, so arrival order does not matter.
    The buckets come back as they are after the addition (judging reads them there)."""
    if not deltas:
        return WrittenBuckets(set())
    cursor = await conn.execute(
        _ADD_PROGRESS + " RETURNING criterion_id, participant_id, bucket, count, sum, max",
        _progress_rows(tenant, deltas),
        binary=True,
    )
    return WrittenBuckets({(d.criterion_id, d.participant_id, d.bucket) for d in deltas}, cursor)


_ADD_DISTINCT = f"""
    INSERT INTO criterion_distinct AS d (project_id, environment, criterion_id,
        participant_id, bucket, value, first_at)
    SELECT %s, %s, * FROM unnest({unnest_texts(4)}, %b::timestamptz[])
    ON CONFLICT (project_id, environment, criterion_id, participant_id, bucket, value)
        DO UPDATE SET first_at = EXCLUDED.first_at WHERE EXCLUDED.first_at < d.first_at
"""  # noqa: S608 - fixed SQL fragments, never input


async def add_distinct_values(
    conn: Conn, tenant: Tenant, values: Sequence[tuple[str, str, str, str, datetime]]
) -> None:
    """Record (criterion, participant, bucket, value, at) for distinct-value criteria.

    A value seen before is written again only when seen earlier than recorded (most
    often it was not: a participant buying the same product again changes nothing)."""
    if not values:
        return
    # One row per key (the earliest time): ON CONFLICT DO UPDATE may not touch a row twice.
    earliest: dict[tuple[str, str, str, str], datetime] = {}
    for *key, at in values:
        k = (key[0], key[1], key[2], key[3])
        earliest[k] = min(at, earliest.get(k, at))
    keys = sorted(earliest)
    await conn.execute(
        _ADD_DISTINCT,
        (
            tenant.project_id,
            tenant.environment,
            *text_columns(keys, 4),
            timestamptz_array([earliest[k] for k in keys]),
        ),
    )


class BucketRange:
    """The buckets of one criterion and participant named from `first` to `last`, in byte
    order (the bucket column's collation is "C": migration 0005). A plain class: judging
    makes a few per event (see `BucketValue`)."""

    __slots__ = ("criterion_id", "first", "last", "participant_id")

    def __init__(self, criterion_id: str, participant_id: str, first: str, last: str) -> None:
        self.criterion_id: Final = criterion_id
        self.participant_id: Final = participant_id
        self.first: Final = first
        self.last: Final = last

    def _fields(self) -> tuple[str, str, str, str]:
        return self.criterion_id, self.participant_id, self.first, self.last

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BucketRange) and self._fields() == other._fields()

    def __lt__(self, other: BucketRange) -> bool:
        return self._fields() < other._fields()

    def __repr__(self) -> str:
        return "BucketRange({!r}, {!r}, {!r}, {!r})".format(*self._fields())


def _range_columns(ranges: Sequence[BucketRange]) -> list[list[str] | str | None]:
    """The `TEXTS` parameters of the ranges' four columns."""
    return [
        *texts([r.criterion_id for r in ranges]),
        *texts([r.participant_id for r in ranges]),
        *texts([r.first for r in ranges]),
        *texts([r.last for r in ranges]),
    ]


def _range_read(table: str, columns: str) -> str:
    """SQL reading `columns` of `table` for each of a list of ranges, named by position."""
    return f"""
        SELECT t.n::int4, {columns}
        FROM unnest({unnest_texts(4)})
            WITH ORDINALITY AS t(cid, pid, lo, hi, n)
        CROSS JOIN LATERAL (
            SELECT {columns} FROM {table} x
            WHERE x.project_id = %s AND x.environment = %s
              AND x.criterion_id = t.cid AND x.participant_id = t.pid
              AND x.bucket >= t.lo COLLATE "C" AND x.bucket <= t.hi COLLATE "C"
            OFFSET 0
        ) x
        """  # noqa: S608 - fixed table and column names, never input


_READ_PROGRESS = _range_read("criterion_progress", "bucket, count, sum, max")
_READ_DISTINCT = _range_read("criterion_distinct", "bucket, value")


Progress = dict[tuple[str, str, str], BucketValue]
Distinct = dict[tuple[str, str, str], set[str]]


class BucketReads:
    """Reads `send_bucket_reads` sent; `values()` waits for them, so in pipeline mode
    PostgreSQL runs them while the caller works on something else."""

    def __init__(
        self,
        ranges: Sequence[BucketRange],
        distinct_ranges: Sequence[BucketRange],
        progress_rows: Any,
        distinct_rows: Any,
    ) -> None:
        self._ranges, self._distinct_ranges = ranges, distinct_ranges
        self._progress_rows, self._distinct_rows = progress_rows, distinct_rows

    async def values(self) -> tuple[Progress, Distinct]:
        """Stored buckets and distinct values by (criterion, participant, bucket)."""
        progress: Progress = {}
        if self._progress_rows is not None:
            ranges = self._ranges
            for n, bucket, count, total, maximum in await self._progress_rows.fetchall():
                r = ranges[n - 1]
                progress[(r.criterion_id, r.participant_id, bucket)] = BucketValue(
                    count, total, maximum
                )
        distinct: Distinct = {}
        if self._distinct_rows is not None:
            ranges = self._distinct_ranges
            for n, bucket, value in await self._distinct_rows.fetchall():
                r = ranges[n - 1]
                distinct.setdefault((r.criterion_id, r.participant_id, bucket), set()).add(value)
        return progress, distinct


async def send_bucket_reads(
    conn: Conn,
    tenant: Tenant,
    ranges: Sequence[BucketRange],
    distinct_ranges: Sequence[BucketRange] = (),
) -> BucketReads:
    """Send the reads of the stored buckets in `ranges` and of the distinct values in
    `distinct_ranges`, without waiting for them.

    Rows name their range by its position (instead of echoing two strings back) and
    come in binary: decoding them is most of the cost of these reads in Python.
    """
    progress_rows = distinct_rows = None
    if ranges:
        progress_rows = await conn.execute(
            _READ_PROGRESS,
            (*_range_columns(ranges), tenant.project_id, tenant.environment),
            binary=True,
        )
    if distinct_ranges:
        distinct_rows = await conn.execute(
            _READ_DISTINCT,
            (*_range_columns(distinct_ranges), tenant.project_id, tenant.environment),
            binary=True,
        )
    return BucketReads(ranges, distinct_ranges, progress_rows, distinct_rows)


async def read_buckets(
    conn: Conn,
    tenant: Tenant,
    ranges: Sequence[BucketRange],
    distinct_ranges: Sequence[BucketRange] = (),
) -> tuple[Progress, Distinct]:
    """Stored buckets in `ranges` and distinct values in `distinct_ranges`, each by
    (criterion, participant, bucket): both queries are sent before either result is
    read (in pipeline mode, one wait for PostgreSQL instead of two)."""
    return await (await send_bucket_reads(conn, tenant, ranges, distinct_ranges)).values()


async def replace_progress(conn: Conn, tenant: Tenant, rows: Sequence[ProgressDelta]) -> None:
    """Set buckets to the given absolute values (a backfill's recomputation from stored
    facts), under the participants' locks; unlike `add_progress`, writing twice is writing
    once."""
    if not rows:
        return
    await conn.execute(_REPLACE_PROGRESS, _progress_rows(tenant, rows))
