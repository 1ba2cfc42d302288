"""Streak freezes: granted, capped, consumed by missed periods, refunded by late activity,
the same whatever the order of the facts; and an admin's restore of a broken run."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bricqs.ids import new_event_id, new_fact_id
from bricqs.mechanics.apply import apply_mechanics
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.definitions import Streak, StreakFreezes, Trigger
from bricqs.mechanics.state import streaks_state
from bricqs.mechanics.streak_runs import Run, to_restore, walk
from bricqs.schemas import Fact
from bricqs.storage.events import insert_facts
from bricqs.storage.locks import lock_participants
from bricqs.storage.tenants import Tenant as MechanicsTenant
from bricqs_devstack.servers import Server
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
        "SELECT deadline_period FROM streak_state WHERE project_id = %s AND participant_id = %s",
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


STREAK_WITH_FREEZES = {
    "code": "daily",
    "name": "Daily",
    "trigger": {"fact_type": "custom.run"},
    "timezone": "Europe/Paris",
    "at_risk_hours": 2,
    "freezes": {"initial": 1, "every": 3, "maximum": 2},
}
START = datetime(2026, 3, 20, 9, 30, tzinfo=UTC)  # the DST change is 9 days later


async def _apply(url: str, tenant: MechanicsTenant, pid: str, batches: list[list[int]]) -> None:
    """Each batch of day offsets from START as one transaction of the engine's path."""
    rules = RuleCache(0)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for batch in batches:
            facts = [
                Fact(
                    fact_id=new_fact_id(),
                    fact_type="custom.run",
                    project_id=tenant.project_id,
                    environment=tenant.environment,
                    participant_id=pid,
                    event_id=new_event_id(),
                    properties={},
                    occurred_at=START + timedelta(days=day),
                )
                for day in batch
            ]
            async with conn.transaction():
                await lock_participants(conn, [(tenant.project_id, tenant.environment, pid)])
                await insert_facts(conn, facts)
                await apply_mechanics(conn, rules, facts, report=False)


async def _streak_view(url: str, tenant: MechanicsTenant, pid: str) -> list[Any]:
    """The state read at several moments, the saved run and the deadline."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        rules = await RuleCache(0)(conn, tenant)
        reads = [
            await streaks_state(conn, tenant, rules, pid, START + timedelta(days=n))
            for n in (5, 12, 20)
        ]
        saved = await (
            await conn.execute(
                "SELECT last_index, last_run_length, longest FROM streak_state"
                " WHERE project_id = %s AND participant_id = %s",
                (tenant.project_id, pid),
            )
        ).fetchall()
        watched = await (
            await conn.execute(
                "SELECT deadline_period, at_risk_at, ends_at FROM streak_state"
                " WHERE project_id = %s AND participant_id = %s AND deadline_period IS NOT NULL",
                (tenant.project_id, pid),
            )
        ).fetchall()
    return [reads, saved, watched]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    days=st.lists(st.integers(min_value=0, max_value=16), min_size=1, max_size=12),
    seed=st.integers(),
    cut=st.integers(min_value=1, max_value=5),
)
def test_any_order_and_batching_of_the_same_facts_gives_the_same_streak(
    story: Story, postgres_server: Server, days: list[int], seed: int, cut: int
) -> None:
    """One participant gets the facts in one batch, another one by one in a shuffled
    order with repeats (redeliveries are new facts of the same day), a third in batches
    of `cut`: the state read, the saved run and the deadline are the same."""
    if not _defined(story):  # the story outlives one example: defined at the first
        story.define("streaks", STREAK_WITH_FREEZES)
    tenant = MechanicsTenant(story.tenant.project_id, "live")
    shuffled = [*days, *days[::2]]
    random.Random(seed).shuffle(shuffled)
    run = uuid.uuid4().hex[:8]
    url = postgres_server.url
    asyncio.run(_apply(url, tenant, f"whole-{run}", [days]))
    asyncio.run(_apply(url, tenant, f"single-{run}", [[d] for d in shuffled]))
    asyncio.run(
        _apply(
            url, tenant, f"cut-{run}", [shuffled[i : i + cut] for i in range(0, len(shuffled), cut)]
        )
    )
    views = [
        asyncio.run(_streak_view(url, tenant, f"{k}-{run}")) for k in ("whole", "single", "cut")
    ]
    assert views[0] == views[1] == views[2]
    assert views[0][2], "an unbroken run is watched"


def _defined(story: Story) -> bool:
    listed = story.api.get("/api/v1/gamify/admin/streaks", headers=story.headers).json()
    return any(d["code"] == "daily" for d in listed["items"])
