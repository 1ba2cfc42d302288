"""Values of criteria from stored buckets, and the points in time they are judged at (pure).

A badge or challenge is judged when new facts touch one of its criteria. Each new fact
gives evaluation points: the whole history (no window, fixed window), the calendar period
the fact falls in, or, for a rolling window of N days, every N-day window that contains
the fact's day. Judging every window that contains the fact, not just the one ending at
it, is what makes the outcome independent of the order in which facts arrive.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Final

from bricqs.mechanics.definitions import Window
from bricqs.mechanics.ruleset import CompiledCriterion
from bricqs.mechanics.windows import day_key, period_key, utc_date
from bricqs.storage.progress import BucketRange, BucketValue


class EvaluationPoint:
    """Consecutive buckets judged together. A plain class (compiled, its fields are read
    natively; a NamedTuple's are looked up by name), made mostly in cached functions."""

    __slots__ = ("buckets", "end", "first", "label", "last")

    def __init__(
        self, label: str, buckets: tuple[str, ...], first: str, last: str, end: int | None = None
    ) -> None:
        self.label: Final = label
        """Names the point: a period key for a calendar window, the last day for a rolling
        one, 'all' otherwise."""
        self.buckets: Final = buckets
        self.first: Final = first
        """The lowest bucket name (bucket names sort by time)."""
        self.last: Final = last
        """The highest bucket name."""
        self.end: Final = end
        """For a rolling window: its last day, as a date's ordinal."""

    def __repr__(self) -> str:
        return f"EvaluationPoint({self.label!r}, first={self.first!r}, last={self.last!r})"


def _one_bucket(key: str) -> EvaluationPoint:
    return EvaluationPoint(key, (key,), key, key)


WHOLE_HISTORY = _one_bucket("all")


def evaluation_points(window: Window | None, times: Sequence[datetime]) -> list[EvaluationPoint]:
    """The points at which facts at `times` must be judged, without repeats."""
    if window is None or window.type == "fixed":
        return [WHOLE_HISTORY]
    if window.type == "rolling" and len(times) == 1:  # one fact: the usual case
        assert window.days is not None
        return list(_rolling_points(utc_date(times[0]), window.days))
    points: dict[str, EvaluationPoint] = {}
    for moment in times:
        if window.type == "calendar":
            assert window.period is not None
            key = period_key(moment, window.period, window.timezone)
            points[key] = _one_bucket(key)
        else:
            assert window.days is not None
            for point in _rolling_points(utc_date(moment), window.days):
                points[point.label] = point
    return list(points.values())


@lru_cache(maxsize=4096)
def _rolling_points(day: date, days: int) -> tuple[EvaluationPoint, ...]:
    """Every `days`-day window containing `day`, each named by its last day.

    Cached: a batch judges many facts of the same few days, and each day gives `days`
    windows of `days` buckets (49 bucket names a fact for a 7-day window).
    """
    return tuple(_rolling_point(day + timedelta(days=offset), days) for offset in range(days))


def _rolling_point(end: date, days: int) -> EvaluationPoint:
    buckets = _rolling_buckets(end, days)
    return EvaluationPoint(buckets[0], buckets, buckets[-1], buckets[0], end.toordinal())


@lru_cache(maxsize=4096)
def _rolling_buckets(end: date, days: int) -> tuple[str, ...]:
    """The day buckets of the `days`-day window ending on `end`, latest first."""
    return tuple(day_key(end - timedelta(days=n)) for n in range(days))


def current_point(window: Window | None, at: datetime) -> EvaluationPoint:
    """The single point that shows progress as of `at` (for reads)."""
    if window is None or window.type == "fixed":
        return WHOLE_HISTORY
    if window.type == "calendar":
        assert window.period is not None
        return _one_bucket(period_key(at, window.period, window.timezone))
    assert window.days is not None
    day = utc_date(at)
    return _rolling_point(day, window.days)


def criterion_value(
    criterion: CompiledCriterion,
    participant_id: str,
    point: EvaluationPoint,
    progress: dict[tuple[str, str, str], BucketValue],
    distinct: dict[tuple[str, str, str], set[str]],
) -> float:
    """The criterion's aggregate over the point's buckets (0 when nothing is stored)."""
    keys = [(criterion.criterion_id, participant_id, bucket) for bucket in point.buckets]
    if criterion.aggregate == "distinct":
        values: set[str] = set()
        for key in keys:
            values |= distinct.get(key, set())
        return float(len(values))
    return _aggregate(criterion.aggregate, [progress[k] for k in keys if k in progress])


def _aggregate(aggregate: str, buckets: Iterable[BucketValue]) -> float:
    if aggregate == "count":
        return float(sum(b.facts for b in buckets))
    if aggregate == "sum":
        # fsum: exact, so a total does not depend on the order its buckets are added in.
        return math.fsum(b.sum for b in buckets)
    maxima = [b.max for b in buckets if b.max is not None]
    return max(maxima) if maxima else 0.0


def _bucket_value(aggregate: str, bucket: BucketValue | None) -> float:
    if bucket is None:
        return 0.0
    if aggregate == "count":
        return float(bucket.facts)
    if aggregate == "sum":
        return bucket.sum
    return 0.0 if bucket.max is None else bucket.max


def values_at(
    criterion: CompiledCriterion,
    participant_id: str,
    points: Collection[EvaluationPoint],
    progress: dict[tuple[str, str, str], BucketValue],
    distinct: dict[tuple[str, str, str], set[str]],
) -> dict[str, float]:
    """`criterion_value` at each point, by label.

    The rolling windows judged around a fact overlap (the 7 windows of 7 days that
    contain a day cover 13 days): their days are looked up once, and each window's value
    is aggregated from that list, not looked up again bucket by bucket.
    """
    cid, aggregate, window = criterion.criterion_id, criterion.aggregate, criterion.window
    if aggregate == "distinct":
        return {
            p.label: criterion_value(criterion, participant_id, p, progress, distinct)
            for p in points
        }
    if window is None or window.type != "rolling":
        # One bucket per point: the whole history, or a calendar period.
        return {
            p.label: _bucket_value(aggregate, progress.get((cid, participant_id, p.first)))
            for p in points
        }
    assert window.days is not None
    span = window.days
    ends = [p.end for p in points if p.end is not None]
    first = min(ends) - span + 1
    days = [
        progress.get((cid, participant_id, key)) for key in _day_keys(first, max(ends) - first + 1)
    ]
    values: dict[str, float] = {}
    if aggregate == "max":
        maxima = [None if b is None else b.max for b in days]
        for point in points:
            assert point.end is not None
            last = point.end - first + 1
            found = [m for m in maxima[last - span : last] if m is not None]
            values[point.label] = max(found) if found else 0.0
        return values
    if aggregate == "count":
        # Each window's count is a difference of running totals: no slice or sum() per
        # window (7 windows of 7 days around a fact).
        running = [0]
        for b in days:
            running.append(running[-1] + (0 if b is None else b.facts))
        for point in points:
            assert point.end is not None
            last = point.end - first + 1
            values[point.label] = float(running[last] - running[last - span])
        return values
    # fsum for sums: exact, like criterion_value's, so both give the same total.
    sums = [0.0 if b is None else b.sum for b in days]
    for point in points:
        assert point.end is not None
        last = point.end - first + 1
        values[point.label] = math.fsum(sums[last - span : last])
    return values


@lru_cache(maxsize=1024)
def _day_keys(first: int, count: int) -> tuple[str, ...]:
    """The bucket names of `count` days from the day of ordinal `first`."""
    return tuple(day_key(date.fromordinal(first + n)) for n in range(count))


def bucket_ranges(
    wanted: Iterable[tuple[CompiledCriterion, str, Sequence[EvaluationPoint]]],
    known: Collection[tuple[str, str, str]] = frozenset(),
) -> tuple[list[BucketRange], list[BucketRange]]:
    """The stored buckets `criterion_value` will read for each (criterion, participant,
    points), as ranges: (in criterion_progress, in criterion_distinct). Each (criterion,
    participant) comes once in `wanted`. A range of one progress bucket in `known`
    (criterion, participant, bucket: one the caller already holds, as a round holds the
    buckets it just wrote) is left out.

    A point's buckets are consecutive buckets of its criterion (one bucket, or the days of
    a rolling window), and bucket names sort by time, so each point is one range of names;
    the ranges of one (criterion, participant) are merged where they overlap. Rolling
    windows are what this is for: the 7-day windows around a fact cover 13 day buckets,
    most of them empty, read with one index range scan instead of 13 lookups.
    """
    ranges: list[BucketRange] = []
    distinct: list[BucketRange] = []
    for criterion, pid, points in wanted:
        cid = criterion.criterion_id
        # Only progress buckets are ever known: distinct values are always read.
        found, skip = (ranges, known) if criterion.aggregate != "distinct" else (distinct, ())
        if len(points) == 1:
            _add_range(found, skip, cid, pid, points[0].first, points[0].last)
            continue
        spans = sorted({(p.first, p.last) for p in points})
        first, last = spans[0]
        for low, high in spans[1:]:
            if low <= last:
                last = max(last, high)
            else:
                _add_range(found, skip, cid, pid, first, last)
                first, last = low, high
        _add_range(found, skip, cid, pid, first, last)
    return ranges, distinct


def _add_range(
    found: list[BucketRange],
    known: Collection[tuple[str, str, str]],
    cid: str,
    pid: str,
    first: str,
    last: str,
) -> None:
    """Add the range to `found` unless it is one bucket in `known`. (A module function,
    not a closure: compiled, a nested function is called through Python's call
    protocol.)"""
    if first == last and (cid, pid, first) in known:
        return
    found.append(BucketRange(cid, pid, first, last))
