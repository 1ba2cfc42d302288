"""Calendar periods in time zones, across midnight and DST changes."""

from __future__ import annotations

from datetime import UTC, datetime

from bricqs.mechanics.windows import period_index, period_key


def test_local_midnight_not_utc_midnight_starts_a_new_day() -> None:
    # 23:30 UTC on 2026-03-09 is already 2026-03-10 in Paris (UTC+1).
    late = datetime(2026, 3, 9, 23, 30, tzinfo=UTC)
    assert period_key(late, "day", "UTC") == "d:2026-03-09"
    assert period_key(late, "day", "Europe/Paris") == "d:2026-03-10"
    before = datetime(2026, 3, 9, 22, 59, tzinfo=UTC)
    assert (
        period_index(late, "day", "Europe/Paris") == period_index(before, "day", "Europe/Paris") + 1
    )


def test_the_short_dst_day_is_one_day() -> None:
    # Europe/Paris springs forward on 2026-03-29: that local day lasts 23 hours.
    start = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 local, 29 March
    end = datetime(2026, 3, 29, 21, 59, tzinfo=UTC)  # 23:59 local (UTC+2), 29 March
    assert period_key(start, "day", "Europe/Paris") == period_key(end, "day", "Europe/Paris")
    nxt = datetime(2026, 3, 29, 22, 0, tzinfo=UTC)  # 00:00 local, 30 March
    assert period_index(nxt, "day", "Europe/Paris") == period_index(end, "day", "Europe/Paris") + 1


def test_weeks_start_on_monday_and_months_follow_each_other() -> None:
    sunday = datetime(2026, 11, 29, 12, tzinfo=UTC)
    monday = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert period_index(monday, "week") == period_index(sunday, "week") + 1
    assert (
        period_index(datetime(2027, 1, 1, tzinfo=UTC), "month")
        == period_index(datetime(2026, 12, 31, tzinfo=UTC), "month") + 1
    )
