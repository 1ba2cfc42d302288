"""Streak freezes: granted, capped, consumed by missed periods, refunded by late activity,
the same whatever the order of the facts; and an admin's restore of a broken run."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from hypothesis import given
from hypothesis import strategies as st

from bricqs.mechanics.definitions import Streak, StreakFreezes, Trigger
from bricqs.mechanics.streak_runs import Run, to_restore, walk
from tests.conftest import Story

RUN = Trigger(fact_type="custom.run")


def streak(initial: int = 0, every: int | None = None, maximum: int = 2) -> Streak:
    return Streak(
        code="daily",
        name="Daily",
        trigger=RUN,
        freezes=StreakFreezes(initial=initial, every=every, maximum=maximum),
    )


def test_a_freeze_is_earned_every_n_active_periods_up_to_the_maximum() -> None:
    every_three = streak(every=3, maximum=2)
    assert walk(range(1, 3), [], 2, every_three).freezes_left == 0
    assert walk(range(1, 4), [], 3, every_three).freezes_left == 1
    assert walk(range(1, 7), [], 6, every_three).freezes_left == 2
    assert walk(range(1, 10), [], 9, every_three).freezes_left == 2  # capped
    # Three missed periods after day 9: two freezes cover 10 and 11, day 12 breaks it.
    found = walk(range(1, 10), [], 12, every_three)
    assert (found.frozen, found.lost) == ([(10, 1), (11, 0)], [12])
    assert (found.current, found.longest, found.runs) == (0, 9, [Run(1, 11, 9)])


def test_a_run_without_freezes_breaks_at_the_first_missed_period() -> None:
    found = walk([1, 2, 4, 5, 6], [], 6, streak())
    assert found.runs == [Run(1, 2, 2), Run(4, 6, 3)]
    assert (found.lost, found.current, found.longest) == ([3], 3, 3)
    assert found.length_at(1) == 2 and found.length_at(5) == 3


def test_periods_not_ended_yet_are_not_judged() -> None:
    found = walk([1, 2], [], 2, streak())  # period 3 is under way
    assert (found.lost, found.current) == ([], 2)
    assert walk([1, 2], [], 3, streak()).current == 0


def test_late_activity_in_a_frozen_period_gives_the_freeze_back() -> None:
    one = streak(initial=1)
    assert walk([1, 3], [], 3, one).freezes_left == 0
    assert walk([1, 2, 3], [], 3, one).freezes_left == 1


def test_restore_bridges_the_latest_break_once() -> None:
    plain = streak()
    assert to_restore([1, 2, 6, 7], [], 7, plain) == [3, 4, 5]
    assert walk([1, 2, 6, 7], [3, 4, 5], 7, plain).current == 4
    assert to_restore([1, 2, 6, 7], [3, 4, 5], 7, plain) == []  # again: nothing to do
    assert to_restore([1, 2, 6, 7], [3, 4, 5], 8, plain) == [8]  # a new break: restorable
    assert to_restore([1, 2], [], 5, plain) == [3, 4, 5]  # no activity since: up to now
    assert walk([1, 2], [3, 4, 5], 5, plain).current == 2


periods = st.lists(st.integers(min_value=0, max_value=40), max_size=25)


@given(
    active=periods,
    bridged=periods,
    ended=st.integers(min_value=0, max_value=45),
    initial=st.integers(min_value=0, max_value=3),
    every=st.one_of(st.none(), st.integers(min_value=1, max_value=5)),
    seed=st.integers(),
)
def test_any_order_or_repetition_of_the_same_periods_walks_the_same(
    active: list[int],
    bridged: list[int],
    ended: int,
    initial: int,
    every: int | None,
    seed: int,
) -> None:
    rules = streak(initial=initial, every=every, maximum=3)
    shuffled = [*active, *active[: len(active) // 2]]
    random.Random(seed).shuffle(shuffled)
    assert walk(shuffled, bridged[::-1], ended, rules) == walk(active, bridged, ended, rules)


def test_a_run_grows_freeze_by_freeze_and_a_restore_lets_it_go_on(
    story: Story, db: psycopg.Connection[Any]
) -> None:
    """Through the api, around the real date (the state read judges missed periods up to
    now): one participant's facts in order, one's in reverse, then a restore."""
    story.define(
        "streaks",
        {
            "code": "daily",
            "name": "Daily",
            "trigger": {"fact_type": "custom.run"},
            "freezes": {"initial": 0, "every": 2, "maximum": 1},
        },
    )
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=n) for n in (9, 8, 7, 6, 4, 3)]  # day -5 missed
    stamps = [d.isoformat().replace("+00:00", "Z") for d in days]
    for stamp in stamps:
        story.send("run", "in-order", timestamp=stamp)
    for stamp in reversed(stamps):
        story.send("run", "reversed", timestamp=stamp)
    shown = [story.get(f"/participants/{p}/streaks")["items"][0] for p in ("in-order", "reversed")]
    # The freeze earned by day -8 covered day -5, the one earned by day -3 day -2; day -1
    # broke the run.
    assert shown[0] == shown[1]
    assert {k: shown[0][k] for k in ("current", "longest", "freezes_left")} == {
        "current": 0,
        "longest": 6,
        "freezes_left": 0,  # earned again by day -3, taken by day -2
    }
    # Restoring bridges day -1.
    path = "/api/v1/gamify/admin/streaks/daily/participants/in-order/restore"
    restored = story.api.post(path, headers=story.headers)
    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert body["bridged"] == [(today - timedelta(days=1)).date().isoformat()]
    assert {k: body["state"][k] for k in ("current", "longest", "at_risk")} == {
        "current": 6,
        "longest": 6,
        "at_risk": True,
    }
    again = story.api.post(path, headers=story.headers).json()
    assert again == {**body, "bridged": []}
    watched = db.execute(
        "SELECT period FROM streak_deadlines WHERE project_id = %s AND participant_id = %s",
        (story.tenant.project_id, "in-order"),
    ).fetchall()
    assert watched == [(today.date().toordinal(),)]
    story.send("run", "in-order")
    assert story.get("/participants/in-order/streaks")["items"][0]["current"] == 7
    missing = story.api.post(
        "/api/v1/gamify/admin/streaks/daily/participants/nobody/restore", headers=story.headers
    )
    assert missing.status_code == 404
    assert missing.json()["type"].endswith("streak_not_started")
