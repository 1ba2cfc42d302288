"""Runs: a repeating board's run is its period in the board's zone (DST included); a
finished run's standings do not move when late facts arrive; past runs are listed and
readable, and each entry says how it moved since the previous run."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from redis.asyncio import Redis

from bricqs.ids import new_fact_id
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.definitions import Leaderboard
from bricqs.mechanics.ruleset import RuleSet
from bricqs.mechanics.standings import keep_standings, keys_of, rebuild, run_bounds, run_of
from bricqs.schemas import Fact
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Tenant
from bricqs_devstack.servers import Server
from tests.conftest import Story, make_tenant
from tests.leaderboards.helpers import define, stored

BERLIN_DAILY = RuleSet.compile(
    [Leaderboard(code="day", name="Day", period="daily", timezone="Europe/Berlin")]
).leaderboards["day"]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_daily_runs_follow_the_boards_zone_across_a_dst_change() -> None:
    # 2026-03-29 is the day Berlin moves to summer time: it lasts 23 hours.
    assert run_of(BERLIN_DAILY, _utc("2026-03-28T22:59:59")) == date(2026, 3, 28).toordinal()
    assert run_of(BERLIN_DAILY, _utc("2026-03-28T23:00:00")) == date(2026, 3, 29).toordinal()
    assert run_of(BERLIN_DAILY, _utc("2026-03-29T21:59:59")) == date(2026, 3, 29).toordinal()
    assert run_of(BERLIN_DAILY, _utc("2026-03-29T22:00:00")) == date(2026, 3, 30).toordinal()
    start, end = run_bounds(BERLIN_DAILY, date(2026, 3, 29).toordinal())
    assert (start, end) == (_utc("2026-03-28T23:00:00"), _utc("2026-03-29T22:00:00"))


def _awarded(tenant: Tenant, pid: str, amount: int, at: datetime) -> Fact:
    return Fact(
        fact_id=new_fact_id(),
        fact_type="points.awarded",
        project_id=tenant.project_id,
        environment=tenant.environment,
        participant_id=pid,
        event_id="evt_" + new_fact_id(),
        properties={"amount": amount, "source": "manual", "rule": None},
        occurred_at=at,
    )


async def _roll_over(url: str, redis_url: str, tenant: Tenant) -> None:
    rules = RuleSet.compile([BERLIN_DAILY.leaderboard])
    dst_day = date(2026, 3, 29).toordinal()
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
        Redis.from_url(redis_url) as redis,
    ):
        standings = Standings(redis)
        morning = _utc("2026-03-29T08:00:00")

        async def keep(facts: list[Fact], now: datetime) -> None:
            async with conn.transaction():
                await keep_standings(conn, standings, tenant, rules, facts, now)

        async with conn.transaction():
            await rebuild(conn, standings, tenant, BERLIN_DAILY, morning)
        await keep(
            [
                _awarded(tenant, "a", 10, _utc("2026-03-28T23:00:00")),  # 00:00 local
                _awarded(tenant, "b", 30, _utc("2026-03-29T21:59:59")),  # 23:59:59 CEST
            ],
            morning,
        )
        final = await standings.top(keys_of(tenant, "day", dst_day), "", 0, 10)
        assert final == (2, [("b", 30.0), ("a", 10.0)])
        # Past midnight in Berlin (22:00 UTC that day): the run has ended. A late fact for
        # it counts nowhere; a fact of the new day opens the next run.
        after = _utc("2026-03-29T22:30:00")
        await keep(
            [
                _awarded(tenant, "a", 50, _utc("2026-03-29T21:00:00")),
                _awarded(tenant, "c", 5, _utc("2026-03-29T22:00:00")),
            ],
            after,
        )
        assert await standings.top(keys_of(tenant, "day", dst_day), "", 0, 10) == final
        assert [(p, s) for p, s, _, _ in await stored(conn, tenant, "day", dst_day)] == [
            ("b", 30.0),
            ("a", 10.0),
        ]
        next_run = await standings.top(keys_of(tenant, "day", dst_day + 1), "", 0, 10)
        assert next_run == (1, [("c", 5.0)])


def test_a_finished_run_is_final_and_late_facts_do_not_move_it(
    postgres_server: Server, redis_server: Server
) -> None:
    tenant = Tenant(make_tenant(postgres_server.url).project_id, "live")
    asyncio.run(_roll_over(postgres_server.url, redis_server.url, tenant))


async def _last_month(url: str, redis_url: str, tenant: Tenant, month: datetime) -> None:
    """Standings of last month's run, kept as the processor kept them then."""
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
        Redis.from_url(redis_url) as redis,
    ):
        rules = await RuleCache(0)(conn, tenant)
        board = rules.leaderboards["monthly"]
        standings = Standings(redis)
        async with conn.transaction():
            await rebuild(conn, standings, tenant, board, month)
            facts = [
                _awarded(tenant, "ann", 50, month),
                _awarded(tenant, "bob", 40, month),
                _awarded(tenant, "cat", 30, month),
            ]
            await keep_standings(conn, standings, tenant, rules, facts, month)


def _define_monthly(url: str, tenant: Tenant) -> None:
    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await define(
                conn,
                tenant,
                "points-rules",
                {
                    "code": "pts",
                    "name": "Points",
                    "trigger": {"fact_type": "custom.earn"},
                    "amount": {"property": "n"},
                },
            )
            await define(
                conn, tenant, "leaderboards", {"code": "monthly", "name": "M", "period": "monthly"}
            )

    asyncio.run(go())


def test_past_runs_are_listed_readable_and_entries_say_how_they_moved(
    story: Story, postgres_server: Server, redis_server: Server
) -> None:
    tenant = Tenant(story.tenant.project_id, "live")
    _define_monthly(postgres_server.url, tenant)
    now = datetime.now(UTC)
    first_of_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (first_of_month - timedelta(days=1)).replace(day=15, hour=12)
    asyncio.run(_last_month(postgres_server.url, redis_server.url, tenant, last_month))
    current = run_of(
        RuleSet.compile([Leaderboard(code="m", name="M", period="monthly")]).leaderboards["m"], now
    )

    story.send("earn", "cat", {"n": 70})
    story.send("earn", "ann", {"n": 20})
    story.send("earn", "dan", {"n": 10})
    board = story.get("/leaderboards/monthly")
    assert board["run"] == current
    assert [(e["participant_id"], e["previous_rank"], e["change"]) for e in board["entries"]] == [
        ("cat", 3, "up"),
        ("ann", 1, "down"),
        ("dan", None, "new"),
    ]
    rank = story.get("/leaderboards/monthly/rank/ann")
    assert (rank["rank"], rank["previous_rank"], rank["change"]) == (2, 1, "down")

    runs = story.get("/leaderboards/monthly/runs")
    assert [(r["run"], r["finished"]) for r in runs["runs"]] == [
        (current, False),
        (current - 1, True),
    ]
    assert runs["runs"][1]["starts_at"].startswith(
        (first_of_month - timedelta(days=1)).strftime("%Y-%m-01T00:00:00")
    )

    def past() -> list[Any]:
        entries = story.get("/leaderboards/monthly", run=current - 1)["entries"]
        return [(e["participant_id"], e["score"]) for e in entries]

    assert past() == [("ann", 50), ("bob", 40), ("cat", 30)]
    # A late event for last month is stored (and earns its points) but the finished run
    # no longer moves.
    story.send("earn", "bob", {"n": 99}, timestamp=last_month.isoformat())
    assert past() == [("ann", 50), ("bob", 40), ("cat", 30)]
    assert story.get("/participants/bob/points")["balance"] == 99
    future = story.api.get(
        "/api/v1/gamify/leaderboards/monthly", headers=story.headers, params={"run": current + 1}
    )
    assert (future.status_code, future.json()["code"]) == (404, "run_not_found")


def test_a_finished_run_announces_its_leaders_once_and_rules_reward_the_winner(
    story: Story, postgres_server: Server, redis_server: Server
) -> None:
    tenant = Tenant(story.tenant.project_id, "live")
    _define_monthly(postgres_server.url, tenant)
    story.define(
        "points-rules",
        {
            "code": "winner",
            "name": "Winner",
            "trigger": {
                "fact_type": "leaderboard.finished",
                "where": {"path": "rank", "op": "eq", "value": 1},
            },
            "amount": {"fixed": 500},
        },
    )
    now = datetime.now(UTC)
    last_month = (now.replace(day=1) - timedelta(days=1)).replace(day=15, hour=12)
    asyncio.run(_last_month(postgres_server.url, redis_server.url, tenant, last_month))
    # The first processing for the tenant after the run ended announces it.
    story.send("earn", "dan", {"n": 1})
    story.send("earn", "dan", {"n": 1})
    finished = story.get("/participants/ann/facts", fact_type="leaderboard.finished")["items"]
    assert [f["properties"] for f in finished] == [
        {
            "leaderboard": "monthly",
            "run": run_of(_monthly(), last_month),
            "rank": 1,
            "score": 50,
            "participants": 3,
        }
    ]
    for pid, rank in (("bob", 2), ("cat", 3)):
        (fact,) = story.get(f"/participants/{pid}/facts", fact_type="leaderboard.finished")["items"]
        assert fact["properties"]["rank"] == rank
    # Rules fire on it: the winner's 500 points (earned as the new run began).
    assert story.get("/participants/ann/points")["balance"] == 500
    assert story.get("/participants/bob/points")["balance"] == 0
    assert story.get("/leaderboards/monthly/rank/ann")["score"] == 500


def _monthly() -> Any:
    return RuleSet.compile([Leaderboard(code="m", name="M", period="monthly")]).leaderboards["m"]
