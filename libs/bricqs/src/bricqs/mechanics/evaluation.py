"""Values of criteria from stored buckets, and the points in time they are judged at (pure).

A badge or challenge is judged when new facts touch one of its criteria. Each new fact
gives evaluation points: the whole history (no window, fixed window), the calendar period
the fact falls in, or, for a rolling window of N days, every N-day window that contains
the fact's day. Judging every window that contains the fact, not just the one ending at
it, is what makes the outcome independent of the order in which facts arrive.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache

from bricqs.mechanics.definitions import Window
from bricqs.mechanics.ruleset import CompiledCriterion
from bricqs.mechanics.windows import day_key, period_key
from bricqs.storage.mechanics import BucketRange, BucketValue


@dataclass(frozen=True)
class EvaluationPoint:
    """A set of buckets judged together; `label` names it (a period key for calendars)."""

    label: str
    buckets: tuple[str, ...]
    end: date | None = None
    """For a rolling window: its last day (the label names it too)."""

    @cached_property  # rolling windows' points are cached, and so their spans
    def span(self) -> tuple[str, str]:
        """The first and last bucket names (the buckets are consecutive)."""
        return min(self.buckets), max(self.buckets)


def evaluation_points(window: Window | None, times: Iterable[datetime]) -> list[EvaluationPoint]:
    """The points at which facts at `times` must be judged, without repeats."""
    if window is None or window.type == "fixed":
        return [EvaluationPoint("all", ("all",))]
    points: dict[str, EvaluationPoint] = {}
    for moment in times:
        if window.type == "calendar":
            assert window.period is not None
            key = period_key(moment, window.period, window.timezone)
            points[key] = EvaluationPoint(key, (key,))
        else:
            assert window.days is not None
            for point in _rolling_points(moment.astimezone(UTC).date(), window.days):
                points[point.label] = point
    return list(points.values())


@lru_cache(maxsize=4096)
def _rolling_points(day: date, days: int) -> tuple[EvaluationPoint, ...]:
    """Every `days`-day window containing `day`, each named by its last day.

    Cached: a batch judges many facts of the same few days, and each day gives `days`
    windows of `days` buckets (49 bucket names a fact for a 7-day window).
    """
    return tuple(
        EvaluationPoint(day_key(end), _rolling_buckets(end, days), end)
        for end in (day + timedelta(days=offset) for offset in range(days))
    )


@lru_cache(maxsize=4096)
def _rolling_buckets(end: date, days: int) -> tuple[str, ...]:
    """The day buckets of the `days`-day window ending on `end`, latest first."""
    return tuple(day_key(end - timedelta(days=n)) for n in range(days))


def current_point(window: Window | None, at: datetime) -> EvaluationPoint:
    """The single point that shows progress as of `at` (for reads)."""
    if window is None or window.type == "fixed":
        return EvaluationPoint("all", ("all",))
    if window.type == "calendar":
        assert window.period is not None
        key = period_key(at, window.period, window.timezone)
        return EvaluationPoint(key, (key,))
    assert window.days is not None
    day = at.astimezone(UTC).date()
    return EvaluationPoint(day_key(day), _rolling_buckets(day, window.days), day)


def criterion_value(
    criterion: CompiledCriterion,
    participant_id: str,
    point: EvaluationPoint,
    progress: Mapping[tuple[str, str, str], BucketValue],
    distinct: Mapping[tuple[str, str, str], set[str]],
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
        return float(sum(b.count for b in buckets))
    if aggregate == "sum":
        # fsum: exact, so a total does not depend on the order its buckets are added in.
        return math.fsum(b.sum for b in buckets)
    maxima = [b.max for b in buckets if b.max is not None]
    return max(maxima) if maxima else 0.0


def values_at(
    criterion: CompiledCriterion,
    participant_id: str,
    points: Collection[EvaluationPoint],
    progress: Mapping[tuple[str, str, str], BucketValue],
    distinct: Mapping[tuple[str, str, str], set[str]],
) -> dict[str, float]:
    """`criterion_value` at each point, by label.

    The rolling windows judged around a fact overlap (the 7 windows of 7 days that
    contain a day cover 13 days): their days are looked up once, and each window's value
    is aggregated from that list, not looked up again bucket by bucket.
    """
    window = criterion.window
    if criterion.aggregate == "distinct" or window is None or window.type != "rolling":
        return {
            p.label: criterion_value(criterion, participant_id, p, progress, distinct)
            for p in points
        }
    assert window.days is not None
    span = window.days
    ends = [p.end.toordinal() for p in points if p.end is not None]
    first = min(ends) - span + 1
    cid = criterion.criterion_id
    days = [
        progress.get((cid, participant_id, day_key(date.fromordinal(ordinal))))
        for ordinal in range(first, max(ends) + 1)
    ]
    values = {}
    for point in points:
        assert point.end is not None
        last = point.end.toordinal() - first
        stored = [b for b in days[last - span + 1 : last + 1] if b is not None]
        values[point.label] = _aggregate(criterion.aggregate, stored)
    return values


def bucket_ranges(
    wanted: Iterable[tuple[CompiledCriterion, str, Iterable[EvaluationPoint]]],
) -> tuple[list[BucketRange], list[BucketRange]]:
    """The stored buckets `criterion_value` will read for each (criterion, participant,
    points), as ranges: (every criterion's, distinct criteria's).

    A point's buckets are consecutive buckets of its criterion (one bucket, or the days of
    a rolling window), and bucket names sort by time, so each point is one range of names;
    the ranges of one (criterion, participant) are merged where they overlap. Rolling
    windows are what this is for: the 7-day windows around a fact cover 13 day buckets,
    most of them empty, read with one index range scan instead of 13 lookups.
    """
    spans: dict[tuple[str, str], set[tuple[str, str]]] = {}
    distinct: set[tuple[str, str]] = set()
    for criterion, participant_id, points in wanted:
        pair = (criterion.criterion_id, participant_id)
        if criterion.aggregate == "distinct":
            distinct.add(pair)
        found = spans.setdefault(pair, set())
        for point in points:
            found.add(point.span)
    ranges: list[BucketRange] = []
    for (cid, pid), pair_spans in spans.items():
        ordered = sorted(pair_spans)
        first, last = ordered[0]
        for low, high in ordered[1:]:
            if low <= last:
                last = max(last, high)
            else:
                ranges.append(BucketRange(cid, pid, first, last))
                first, last = low, high
        ranges.append(BucketRange(cid, pid, first, last))
    return ranges, [r for r in ranges if (r.criterion_id, r.participant_id) in distinct]
