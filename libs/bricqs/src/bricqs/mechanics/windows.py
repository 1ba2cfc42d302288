"""Time windows and calendar periods, in UTC or an IANA time zone (pure).

Periods are numbered so that consecutive periods differ by one: days by their ordinal,
weeks (ISO, starting Monday) by the ordinal of their Monday divided by 7, months by
year * 12 + month. Local dates come from zoneinfo, so DST changes are handled: a day is
the local calendar day whatever its length.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from bricqs.mechanics.definitions import Window


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """A cached ZoneInfo."""
    return ZoneInfo(name)


def local_date(moment: datetime, timezone: str) -> date:
    """The calendar date of `moment` in `timezone`."""
    if timezone == "UTC":  # the usual zone: a fixed offset, far cheaper than zoneinfo's
        return utc_date(moment)
    return moment.astimezone(zone(timezone)).date()


def utc_date(moment: datetime) -> date:
    """The UTC calendar date of `moment`."""
    if moment.tzinfo is UTC:  # facts' times are decoded in UTC: no conversion to make
        return moment.date()
    return moment.astimezone(UTC).date()


def period_index(moment: datetime, period: str, timezone: str = "UTC") -> int:
    """The number of the day/week/month containing `moment`; consecutive periods differ by 1."""
    day = local_date(moment, timezone)
    if period == "day":
        return day.toordinal()
    if period == "week":
        return (day.toordinal() - day.weekday()) // 7
    return day.year * 12 + day.month - 1


def period_start(index: int, period: str) -> date:
    """The first local date of period `index` (0001-01-01 is a Monday, ordinal 1)."""
    if period == "day":
        return date.fromordinal(index)
    if period == "week":
        return date.fromordinal(index * 7 + 1)
    return date(index // 12, index % 12 + 1, 1)


def period_key(moment: datetime, period: str, timezone: str = "UTC") -> str:
    """A readable, sortable bucket name for the period containing `moment`."""
    return _period_name(local_date(moment, timezone), period)


@lru_cache(maxsize=8192)
def _period_name(day: date, period: str) -> str:
    # Cached: a batch names the same few periods for thousands of facts.
    if period == "day":
        return day_key(day)
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"w:{year}-W{week:02d}"
    return f"m:{day.year}-{day.month:02d}"


@lru_cache(maxsize=8192)
def day_key(day: date) -> str:
    """The bucket name of one UTC day (rolling windows sum these)."""
    return f"d:{day.isoformat()}"


def buckets_for(window: Window | None, moment: datetime) -> str | None:
    """The bucket a fact at `moment` counts in, or None when outside the window."""
    if window is None:
        return "all"
    if window.type == "fixed":
        if (window.start and moment < window.start) or (window.end and moment >= window.end):
            return None
        return "all"
    if window.type == "calendar":
        assert window.period is not None
        return period_key(moment, window.period, window.timezone)
    return day_key(utc_date(moment))


def buckets_to_read(window: Window | None, at: datetime) -> list[str]:
    """The buckets whose sum is the criterion's value as of `at`."""
    if window is None or window.type == "fixed":
        return ["all"]
    if window.type == "calendar":
        assert window.period is not None
        return [period_key(at, window.period, window.timezone)]
    assert window.days is not None
    today = utc_date(at)
    return [day_key(today - timedelta(days=n)) for n in range(window.days)]
