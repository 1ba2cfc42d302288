"""A participant's streak runs, freezes and breaks, from the periods they were active in
(pure).

Everything here is a function of three things: the set of active period indices, the set
of periods an admin bridged (a restore), and the latest period that has ended. Which fact
arrived first, or in which batch, cannot change the answer, so redelivery, replay and
late events all give the same state.

Walking the periods in order: an active period extends the run and may earn a freeze
(one every `every` active periods, at most `maximum` held); a bridged period keeps the
run without lengthening it; a missed period is covered by a freeze when one is held
(the run goes on, one fewer freeze), else it breaks the run (the period is lost). Missed
periods after the latest active one count only once they have ended.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Final

from bricqs.mechanics.definitions import MAX_GRACE_HOURS, Streak
from bricqs.mechanics.windows import period_index, period_start, zone
from bricqs.storage.streaks import Deadline
from bricqs.storage.tenants import Tenant

# Run and Walk are plain classes, not dataclasses: a batch walks a streak per participant
# it extends, and compiled (mypyc) only a plain class's constructor runs natively (a
# dataclass's generated __init__ runs as interpreted Python).


class Run:
    """A run of periods: its first active one, the last it covers (active, frozen or
    bridged) and how many active periods it holds."""

    __slots__ = ("first", "last", "length")

    def __init__(self, first: int, last: int, length: int) -> None:
        self.first: Final = first
        self.last: Final = last
        self.length: Final = length

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and (self.first, self.last, self.length) == (
            other.first,
            other.last,
            other.length,
        )

    def __repr__(self) -> str:
        return f"Run(first={self.first}, last={self.last}, length={self.length})"


class Walk:
    """What the periods add up to."""

    __slots__ = ("freezes_left", "frozen", "lost", "runs")

    def __init__(self, freezes_left: int = 0) -> None:
        self.runs: list[Run] = []
        self.freezes_left = freezes_left
        self.frozen: list[tuple[int, int]] = []
        """(missed period a freeze covered, freezes left after it), ascending."""
        self.lost: list[int] = []
        """Missed periods that broke a run, ascending."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Walk) and self._fields() == other._fields()

    def __repr__(self) -> str:
        runs, freezes_left, frozen, lost = self._fields()
        return f"Walk({runs=}, {freezes_left=}, {frozen=}, {lost=})"

    def _fields(self) -> tuple[list[Run], int, list[tuple[int, int]], list[int]]:
        return self.runs, self.freezes_left, self.frozen, self.lost

    @property
    def longest(self) -> int:
        """The longest run's length."""
        return max((r.length for r in self.runs), default=0)

    @property
    def alive(self) -> bool:
        """Whether the latest run is unbroken (nothing lost after it)."""
        return bool(self.runs) and not (self.lost and self.lost[-1] > self.runs[-1].last)

    @property
    def current(self) -> int:
        """The latest run's length if it is unbroken, else 0."""
        return self.runs[-1].length if self.alive else 0

    def length_at(self, index: int) -> int:
        """The length of the run covering period `index` (0 when none does)."""
        return next((r.length for r in self.runs if r.first <= index <= r.last), 0)


def walk(active: Iterable[int], bridged: Iterable[int], ended: int, streak: Streak) -> Walk:
    """Runs, freezes and breaks of `active` periods with `bridged` ones, judging missed
    periods after the latest active one up to `ended` (the latest period that has ended)."""
    periods = sorted(set(active))
    kept = set(bridged)
    rules = streak.freezes
    result = Walk(freezes_left=rules.initial if rules else 0)
    first = last = length = 0
    started = False
    for earned, index in enumerate(periods, start=1):
        if started:
            survived, last = _gap(result, kept, last, index - 1)
            if not survived:
                result.runs.append(Run(first, last, length))
                started = False
        if not started:
            first, length, started = index, 0, True
        length += 1
        last = index
        if rules and rules.every and earned % rules.every == 0:
            result.freezes_left = min(rules.maximum, result.freezes_left + 1)
    if started:
        _, last = _gap(result, kept, last, ended)
        result.runs.append(Run(first, last, length))
    return result


def _gap(result: Walk, kept: set[int], last: int, stop: int) -> tuple[bool, int]:
    """Judge the missed periods after `last` up to `stop`, into `result`: whether the run
    survives them, and the last period it covers. (A module function, not a closure:
    compiled, a nested function is called through Python's call protocol.)"""
    for index in range(last + 1, stop + 1):
        if index in kept:
            last = index
        elif result.freezes_left > 0:
            result.freezes_left -= 1
            result.frozen.append((index, result.freezes_left))
            last = index
        else:
            result.lost.append(index)
            return False, last
    return True, last


# Every grace a definition may give, made once (stored definitions are read back through
# the schema, so none has more): a timedelta built from keywords costs more than the
# subtraction (the constructor parses them), and this runs for every streak hit.
_GRACES = tuple(timedelta(hours=hours) for hours in range(MAX_GRACE_HOURS + 1))


def moment_index(streak: Streak, moment: datetime, timezone: str) -> int:
    """The period `moment` counts for (grace hours move every boundary later)."""
    if streak.grace_hours:
        moment -= _GRACES[streak.grace_hours]
    return period_index(moment, streak.period, timezone)


def period_end(streak: Streak, index: int, timezone: str) -> datetime:
    """When period `index` ends, in UTC: the next period's local start plus the grace."""
    return _period_end(streak.period, streak.grace_hours, index, timezone)


@lru_cache(maxsize=8192)
def _period_end(period: str, grace_hours: int, index: int, timezone: str) -> datetime:
    # Cached: a batch's runs end in the same few periods (two lookups a run judged).
    start = datetime.combine(period_start(index + 1, period), time(), zone(timezone))
    return start.astimezone(UTC) + timedelta(hours=grace_hours)


def period_label(streak: Streak, index: int) -> str:
    """The local date period `index` starts on (ISO), as facts name it."""
    return period_start(index, streak.period).isoformat()


def watched(result: Walk) -> int | None:
    """The period whose end decides the run next (the one after its last covered
    period), or None when there is no unbroken run to watch."""
    return result.runs[-1].last + 1 if result.alive else None


def to_restore(
    active: Iterable[int], bridged: Iterable[int], ended: int, streak: Streak
) -> list[int]:
    """The missed periods a restore bridges: those of the latest break, from the lost
    period to the next active one (or to `ended`); none when no run broke after the last
    restore, so restoring twice is restoring once."""
    periods, kept = sorted(set(active)), sorted(set(bridged))
    result = walk(periods, kept, ended, streak)
    breaks = [i for i in result.lost if not kept or i > kept[-1]]
    if not breaks:
        return []
    start = breaks[-1]
    stop = next((p for p in periods if p > start), ended + 1)
    return list(range(start, stop))


def deadline_after(
    tenant: Tenant, streak: Streak, participant_id: str, timezone: str, result: Walk
) -> Deadline | None:
    """When the run `result` ends with is next judged (None when it is broken)."""
    period = watched(result)
    if period is None:
        return None
    at_risk_at, ends_at = _watch_times(
        streak.period, streak.grace_hours, streak.at_risk_hours, period, timezone
    )
    return Deadline(tenant, streak.code, participant_id, period, timezone, at_risk_at, ends_at)


@lru_cache(maxsize=8192)
def _watch_times(
    period: str, grace_hours: int, at_risk_hours: int | None, index: int, timezone: str
) -> tuple[datetime | None, datetime]:
    """When a run watching period `index` is warned (None: never) and when it ends.
    Cached: a batch's runs watch the same few periods."""
    ends_at = _period_end(period, grace_hours, index, timezone)
    if at_risk_hours is None:
        return None, ends_at
    # Never before the period starts: the warning is about this period's activity.
    starts_at = _period_end(period, grace_hours, index - 1, timezone)
    return max(ends_at - timedelta(hours=at_risk_hours), starts_at), ends_at
