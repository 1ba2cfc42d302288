"""The scheduler: time-driven facts on the right moment, once, with several replicas and
a replica killed mid-transaction. The clock is the test's (`rounds(…, now)`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from redis.asyncio import Redis

from bricqs.ids import new_fact_id
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.standings import keep_standings, rebuild
from bricqs.schemas import Fact
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Tenant as MechanicsTenant
from bricqs_devstack.servers import Server
from tests.conftest import Story, Tenant
from tests.processes import ProcessorFactory, wait_until
from tests.processor.schedule_helpers import (
    rounds,
    subscribe_all,
    timed_facts,
    webhook_messages,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def emitted(db: psycopg.Connection[Any], tenant: Tenant) -> list[tuple[str, str, str, str]]:
    """(type, participant, period, occurred_at) of the tenant's clock-made facts."""
    return [
        (kind, pid, props.get("period", ""), when.astimezone(UTC).isoformat())
        for kind, pid, props, when in timed_facts(db, tenant.project_id)
    ]


def daily_in_paris(story: Story, **extra: Any) -> None:
    """A daily streak of `custom.run` in Paris, with `extra` fields."""
    body = {
        "code": "daily",
        "name": "Daily",
        "trigger": {"fact_type": "custom.run"},
        "timezone": "Europe/Paris",
    }
    story.define("streaks", body | extra)


def two_zones(story: Story) -> None:
    """A daily streak in Paris and one in Tokyo, each active on Saturday 2026-03-28 (the
    night after, Paris moves to summer time)."""
    for code, zone in (("paris", "Europe/Paris"), ("tokyo", "Asia/Tokyo")):
        story.define(
            "streaks",
            {
                "code": code,
                "name": code,
                "trigger": {"fact_type": f"custom.{code}_run"},
                "timezone": zone,
            },
        )
    story.send("paris_run", "anne", timestamp="2026-03-28T10:00:00Z")  # 11:00 in Paris
    story.send("tokyo_run", "kenji", timestamp="2026-03-28T10:00:00Z")  # 19:00 in Tokyo


def test_a_streak_is_lost_at_midnight_in_its_zone_on_the_right_day_dst_included(
    story: Story, postgres_server: Server, db: psycopg.Connection[Any]
) -> None:
    two_zones(story)
    url = postgres_server.url
    rounds(url, at("2026-03-29T14:59:59Z"))
    assert emitted(db, story.tenant) == []
    rounds(url, at("2026-03-29T15:00:00Z"))  # midnight in Tokyo
    tokyo = ("streak.lost", "kenji", "2026-03-29", "2026-03-29T15:00:00+00:00")
    assert emitted(db, story.tenant) == [tokyo]
    # Paris's Sunday has 23 hours: its midnight is 22:00 UTC, not 23:00.
    rounds(url, at("2026-03-29T21:59:59Z"))
    assert emitted(db, story.tenant) == [tokyo]
    rounds(url, at("2026-03-29T22:00:00Z"))
    paris = ("streak.lost", "anne", "2026-03-29", "2026-03-29T22:00:00+00:00")
    assert emitted(db, story.tenant) == [tokyo, paris]
    rounds(url, at("2026-04-02T00:00:00Z"), replicas=2)  # nothing more: the runs are gone
    assert emitted(db, story.tenant) == [tokyo, paris]


CHILD = """
import asyncio, sys
from datetime import datetime
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.schedule import judge_streaks
from bricqs.storage.pools import database_pool
from bricqs_processor.scheduler import Scheduler

async def claim_then_hang(conn, rules_for, now, limit):
    seen = await judge_streaks(conn, rules_for, now, limit)
    print("claimed", seen, flush=True)
    await asyncio.sleep(600)  # killed before it commits
    return seen

async def main():
    pool = database_pool(sys.argv[1], name="doomed", max_size=1, statement_timeout_ms=None,
                         transaction_pooling=False)
    await pool.open(wait=True)
    now = datetime.fromisoformat(sys.argv[2])
    scheduler = Scheduler(pool, RuleCache(0), limit=10_000, max_calls=1,
                          connection_timeout_s=10, clock=lambda: now, work=[claim_then_hang])
    await scheduler.round()

asyncio.run(main())
"""


def test_two_replicas_and_one_killed_between_claim_and_commit_emit_each_loss_once(
    story: Story, postgres_server: Server, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    two_zones(story)
    subscribe_all(db, story.tenant.project_id)
    url, now = postgres_server.url, at("2026-03-30T00:00:00Z")
    out = tmp_path / "child.out"
    with out.open("wb") as sink:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, url, now.isoformat()],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
    try:
        wait_until(lambda: b"claimed" in out.read_bytes(), 30, "the claim", out.read_text)
        # Claimed and not committed: nothing visible, and another replica skips the rows.
        rounds(url, now)
        assert emitted(db, story.tenant) == []
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()

    # The killed transaction's rows are due again once PostgreSQL has noticed the death.
    def both_lost() -> bool:
        rounds(url, now, replicas=2)
        return len(emitted(db, story.tenant)) == 2

    wait_until(both_lost, 30, "the losses after the kill")
    rounds(url, now, replicas=2)
    assert emitted(db, story.tenant) == [
        ("streak.lost", "kenji", "2026-03-29", "2026-03-29T15:00:00+00:00"),
        ("streak.lost", "anne", "2026-03-29", "2026-03-29T22:00:00+00:00"),
    ]
    assert webhook_messages(db, story.tenant.project_id) == [("streak.lost", 2)]


def test_at_risk_comes_the_configured_hours_before_the_period_ends_once(
    story: Story, postgres_server: Server, db: psycopg.Connection[Any]
) -> None:
    daily_in_paris(story, at_risk_hours=3)
    story.send("run", "anne", timestamp="2026-03-28T10:00:00Z")
    story.send("run", "bob", timestamp="2026-03-28T10:00:00Z")
    story.send("run", "bob", timestamp="2026-03-29T10:00:00Z")  # safe on Sunday
    url = postgres_server.url
    rounds(url, at("2026-03-29T18:59:59Z"))
    assert emitted(db, story.tenant) == []
    rounds(url, at("2026-03-29T19:00:00Z"), replicas=2)  # 21:00 in Paris, 3 h to midnight
    risk = ("streak.at_risk", "anne", "2026-03-29", "2026-03-29T19:00:00+00:00")
    assert emitted(db, story.tenant) == [risk]
    rounds(url, at("2026-03-29T21:00:00Z"), replicas=2)
    assert emitted(db, story.tenant) == [risk]
    rounds(url, at("2026-03-29T22:00:00Z"))
    lost = ("streak.lost", "anne", "2026-03-29", "2026-03-29T22:00:00+00:00")
    # Bob's Monday warning comes at 21:00 Paris time too (UTC+2 from now on).
    bob = ("streak.at_risk", "bob", "2026-03-30", "2026-03-30T19:00:00+00:00")
    rounds(url, at("2026-03-30T19:00:00Z"))
    assert emitted(db, story.tenant) == [risk, lost, bob]


def test_a_freeze_covers_the_dst_night_then_the_next_miss_loses_the_run(
    story: Story, postgres_server: Server, db: psycopg.Connection[Any]
) -> None:
    daily_in_paris(story, freezes={"initial": 1, "maximum": 3})
    story.send("run", "anne", timestamp="2026-03-27T10:00:00Z")
    story.send("run", "anne", timestamp="2026-03-28T10:00:00Z")
    url = postgres_server.url
    rounds(url, at("2026-03-29T22:00:00Z"), replicas=2)
    frozen = ("streak.freeze_consumed", "anne", "2026-03-29", "2026-03-29T22:00:00+00:00")
    assert emitted(db, story.tenant) == [frozen]
    _, _, props, _ = timed_facts(db, story.tenant.project_id)[0]
    assert (props["freezes_left"], props["length"]) == (0, 2)
    rounds(url, at("2026-03-30T21:59:59Z"))
    assert emitted(db, story.tenant) == [frozen]
    rounds(url, at("2026-03-30T22:00:00Z"), replicas=2)
    lost = ("streak.lost", "anne", "2026-03-30", "2026-03-30T22:00:00+00:00")
    assert emitted(db, story.tenant) == [frozen, lost]
    assert timed_facts(db, story.tenant.project_id)[1][2]["length"] == 2


def test_a_closed_challenge_window_expires_once_for_those_with_progress_only(
    story: Story, postgres_server: Server, db: psycopg.Connection[Any]
) -> None:
    story.define(
        "challenges",
        {
            "code": "april",
            "name": "April",
            "window": {
                "type": "fixed",
                "start": "2026-04-01T00:00:00Z",
                "end": "2026-05-01T00:00:00Z",
            },
            "objectives": [{"code": "buy", "criterion": {"fact_type": "custom.buy"}, "target": 2}],
        },
    )
    subscribe_all(db, story.tenant.project_id)
    story.send("buy", "tried", timestamp="2026-04-10T10:00:00Z")
    story.send("buy", "done", timestamp="2026-04-10T10:00:00Z")
    story.send("buy", "done", timestamp="2026-04-11T10:00:00Z")
    story.send("buy", "late", timestamp="2026-05-02T10:00:00Z")  # after the window
    url = postgres_server.url
    rounds(url, at("2026-04-30T23:59:59Z"))
    assert emitted(db, story.tenant) == []
    rounds(url, at("2026-05-01T00:00:00Z"), replicas=2)
    rounds(url, at("2026-05-01T00:10:00Z"), replicas=2)
    assert emitted(db, story.tenant) == [
        ("challenge.expired", "tried", "", "2026-05-01T00:00:00+00:00")
    ]
    assert webhook_messages(db, story.tenant.project_id) == [("challenge.expired", 1)]


MARCH = at("2026-03-15T12:00:00Z")


def reward_the_winner(story: Story) -> None:
    """500 points to the first of a finished run."""
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


async def past_standings(
    url: str, redis_url: str, tenant: MechanicsTenant, code: str, moment: datetime
) -> None:
    """The run of board `code` at `moment`, as the processor kept it then: ann 50, bob 40."""
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
        Redis.from_url(redis_url) as redis,
    ):
        rules = await RuleCache(0)(conn, tenant)
        standings = Standings(redis)
        async with conn.transaction():
            await rebuild(conn, standings, tenant, rules.leaderboards[code], moment)
            earned = [
                Fact(
                    fact_id=new_fact_id(),
                    fact_type="points.awarded",
                    project_id=tenant.project_id,
                    environment=tenant.environment,
                    participant_id=pid,
                    event_id="evt_march",
                    properties={"amount": amount},
                    occurred_at=moment,
                )
                for pid, amount in (("ann", 50), ("bob", 40))
            ]
            await keep_standings(conn, standings, tenant, rules, earned, moment)


def test_a_run_is_announced_when_it_ends_once_and_not_again_by_a_later_fact(
    story: Story, postgres_server: Server, redis_server: Server, db: psycopg.Connection[Any]
) -> None:
    story.define("leaderboards", {"code": "monthly", "name": "Monthly", "period": "monthly"})
    reward_the_winner(story)
    tenant = MechanicsTenant(story.tenant.project_id, "live")
    asyncio.run(past_standings(postgres_server.url, redis_server.url, tenant, "monthly", MARCH))
    url = postgres_server.url
    rounds(url, at("2026-03-31T23:59:59Z"), replicas=2)
    assert emitted(db, story.tenant) == []
    rounds(url, at("2026-04-01T00:00:00Z"), replicas=2)
    announced = [
        ("leaderboard.finished", "ann", "", "2026-04-01T00:00:00+00:00"),
        ("leaderboard.finished", "bob", "", "2026-04-01T00:00:00+00:00"),
    ]
    assert emitted(db, story.tenant) == announced
    assert story.get("/participants/ann/points")["balance"] == 500  # the rules ran on it
    rounds(url, at("2026-04-01T00:05:00Z"), replicas=2)
    story.send("anything", "dan")  # the path that announced runs before the scheduler
    assert emitted(db, story.tenant) == announced
    assert story.get("/participants/ann/points")["balance"] == 500


def test_two_processors_run_the_scheduler_and_emit_a_past_loss_once(
    story: Story, processors: ProcessorFactory, db: psycopg.Connection[Any]
) -> None:
    """The real processes, on the real clock: a run last kept three days ago is lost on
    the day after, emitted by whichever processor's scheduler gets there, once."""
    daily_in_paris(story)
    kept = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    kept -= timedelta(days=3)
    story.send("run", "anne", timestamp=kept.isoformat().replace("+00:00", "Z"))
    both = [processors.start(SCHEDULER_ENABLED="true", SCHEDULER_INTERVAL_MS="50") for _ in "ab"]
    wait_until(lambda: emitted(db, story.tenant), 30, "the loss", processors.logs)
    for processor in both:  # each has run rounds since: nothing more to emit
        rounds_before = processor.metrics().get("bricqs_processor_scheduler_rounds_total", 0)
        wait_until(
            lambda p=processor, n=rounds_before: (
                p.metrics().get("bricqs_processor_scheduler_rounds_total", 0) > n + 1
            ),
            30,
            "two more rounds",
            processors.logs,
        )
    ((kind, pid, period, _),) = emitted(db, story.tenant)
    assert (kind, pid, period) == (
        "streak.lost",
        "anne",
        (kept + timedelta(days=1)).date().isoformat(),
    )


def test_the_winners_reward_reaches_the_boards_mirror_of_the_new_run(
    story: Story, postgres_server: Server, redis_server: Server
) -> None:
    """On the real clock: yesterday's daily run is announced, the rule rewards its winner
    in today's run, and the board read from Redis shows it at once."""
    story.define("leaderboards", {"code": "daily", "name": "Daily", "period": "daily"})
    reward_the_winner(story)
    tenant = MechanicsTenant(story.tenant.project_id, "live")
    yesterday = datetime.now(UTC) - timedelta(days=1)
    asyncio.run(past_standings(postgres_server.url, redis_server.url, tenant, "daily", yesterday))
    assert story.get("/leaderboards/daily")["entries"] == []  # today's mirror, loaded empty
    rounds(postgres_server.url, datetime.now(UTC), redis_url=redis_server.url)
    entries = story.get("/leaderboards/daily")["entries"]
    assert [(e["participant_id"], e["score"]) for e in entries] == [("ann", 500)]
