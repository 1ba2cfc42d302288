"""Backfill of a badge or challenge over facts stored before it existed (issue 19).

Facts are sent through the sync endpoint before the definition is created, so the live
pipeline never counted them; the backfill job is then worked by the processor's runner
(`bricqs_processor.jobs.JobRunner`) in the test's event loop, on a clock the test moves.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest

from bricqs.ids import new_event_id
from bricqs.mechanics.cache import RuleCache
from bricqs.pipeline import process_envelopes
from bricqs.schemas import Envelope
from bricqs_devstack.servers import Server
from bricqs_processor.jobs import JobRunner
from bricqs_processor.main import make_pool
from bricqs_processor.settings import ProcessorSettings
from tests.api.test_data_rights import envelope_of
from tests.conftest import Story, make_tenant
from tests.webhooks.conftest import hooks, open_api  # noqa: F401 - fixtures

ADMIN = "/api/v1/gamify/admin"
PURCHASE = {"fact_type": "custom.purchase"}
# Purchases per participant, sent before any definition exists.
HISTORY = {"ann": 5, "bob": 3, "cat": 2, "dan": 1, "eve": 4}
BADGE = {"code": "three", "name": "Three", "criteria": [{"criterion": PURCHASE, "threshold": 3}]}
CHALLENGE = {
    "code": "shopper",
    "name": "Shopper",
    "objectives": [{"code": "buy", "criterion": PURCHASE, "target": 4}],
    "reward": {"points": 50, "badge": "three"},
}


def runner_settings(server: Server, redis_url: str, **extra: Any) -> ProcessorSettings:
    values: dict[str, Any] = {
        "database_url": server.url,
        "redis_url": redis_url,
        "rules_refresh_seconds": 0,
        "jobs_chunk_size": 2,
        "jobs_settle_ms": 0,
        "consumer_name": "backfill-test",
    }
    return ProcessorSettings(**(values | extra))


class Runners:
    """Job runners on a pool of their own, each on a clock the test sets."""

    def __init__(self, settings: ProcessorSettings) -> None:
        self.settings = settings
        self.ahead = timedelta(0)
        """How far the runners' clock is ahead of the real one."""

    def runner(self, pool: Any) -> JobRunner:
        return JobRunner(self.settings, pool, None, clock=lambda: datetime.now(UTC) + self.ahead)

    def drain(self, max_chunks: int = 20) -> list[str | None]:
        """A runner claims and works a job, for `max_chunks` chunks at most (bounded: more
        than any job here needs); [its id], or [None] when none was due."""

        async def go() -> list[str | None]:
            pool = make_pool(self.settings)
            await pool.open()
            try:
                return [await self.runner(pool).run_once(max_chunks)]
            finally:
                await pool.close()

        return asyncio.run(go())


@pytest.fixture
def runners(postgres_server: Server, redis_server: Server, db: psycopg.Connection[Any]) -> Runners:
    # A runner takes any environment's oldest open job: jobs other tests left open (the
    # api's fuzzing asks for backfills) are closed, so the runners here find only theirs.
    db.execute(
        "UPDATE backfill_jobs SET status = 'failed', error = 'left open by another test'"
        " WHERE status IN ('pending', 'running')"
    )
    return Runners(runner_settings(postgres_server, redis_server.url))


@pytest.fixture
def story(hooks: Story) -> Iterator[Story]:  # noqa: F811
    for participant, purchases in HISTORY.items():
        for n in range(purchases):
            hooks.send("purchase", participant, {"n": n})
    yield hooks


def backfill(story: Story, segment: str, code: str, **params: Any) -> Any:
    response = story.api.post(
        f"{ADMIN}/{segment}/{code}/backfill", headers=story.headers, params=params
    )
    assert response.status_code in (200, 202), response.text
    return response.json()


def job(story: Story, job_id: str) -> Any:
    response = story.api.get(f"{ADMIN}/jobs/{job_id}", headers=story.headers)
    assert response.status_code == 200, response.text
    return response.json()


def rows_of(
    db: psycopg.Connection[Any], project_id: str, queries: dict[str, str]
) -> dict[str, list[Any]]:
    """Each query's rows for the project, by name."""
    return {
        name: db.execute(sql, (project_id,)).fetchall()  # type: ignore[arg-type]
        for name, sql in queries.items()
    }


def snapshot(db: psycopg.Connection[Any], project_id: str) -> dict[str, list[Any]]:
    """Every mechanics row of the project (ids that differ between runs left out)."""
    queries = {
        "progress": "SELECT environment, criterion_id, participant_id, bucket, count, sum"
        " FROM criterion_progress WHERE project_id = %s ORDER BY 1, 2, 3, 4",
        "awards": "SELECT environment, badge_code, participant_id, award_key, source"
        " FROM badge_awards WHERE project_id = %s ORDER BY 1, 2, 3, 4",
        "completions": "SELECT environment, challenge_code, participant_id, source"
        " FROM challenge_completions WHERE project_id = %s ORDER BY 1, 2, 3",
        "ledger": "SELECT environment, participant_id, amount, kind, source"
        " FROM points_ledger WHERE project_id = %s ORDER BY 1, 2, 3, 4, 5",
        "balances": "SELECT environment, participant_id, balance, total_earned"
        " FROM points_balances WHERE project_id = %s ORDER BY 1, 2",
        "facts": "SELECT environment, participant_id, fact_type, properties - 'job_id'"
        " FROM facts WHERE project_id = %s ORDER BY 1, 2, 3, (properties - 'job_id')::text",
        "messages": "SELECT count(*) FROM webhook_messages WHERE project_id = %s",
    }
    return rows_of(db, project_id, queries)


def subscribe_all(story: Story) -> None:
    response = story.api.post(
        f"{ADMIN}/webhooks",
        headers=story.headers,
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]},
    )
    assert response.status_code == 201, response.text


def test_dry_run_counts_what_the_job_then_does_and_writes_nothing(
    story: Story, runners: Runners, db: psycopg.Connection[Any]
) -> None:
    story.define("badges", BADGE)
    story.define("challenges", CHALLENGE)
    levels = [
        {"code": "bronze", "name": "Bronze", "min_points": 0},
        {"code": "silver", "name": "Silver", "min_points": 50},
    ]
    story.define("tiers", {"code": "level", "name": "Level", "levels": levels})
    project = story.tenant.project_id
    before = snapshot(db, project)

    badge_dry = backfill(story, "badges", "three", dry_run="true")
    challenge_dry = backfill(story, "challenges", "shopper", dry_run="true")

    assert snapshot(db, project) == before
    assert badge_dry["outcomes"] == {
        "participants": 5,
        "participants_gaining": 3,  # ann, bob, eve
        "badges_awarded": 3,
        "challenges_completed": 0,
        "points_awarded": 0,
        "progress_rows": 5,  # one 'all' bucket per participant
    }
    started = backfill(story, "badges", "three")
    assert started["status"] == "pending" and started["participants_total"] == 5
    assert runners.drain() == [started["job_id"]]
    done = job(story, started["job_id"])
    assert done["status"] == "done" and done["participants_done"] == 5
    assert done["outcomes"] == badge_dry["outcomes"]

    # The badge's buckets are now written: the challenge (same criterion) needs none.
    assert challenge_dry["outcomes"]["challenges_completed"] == 2  # ann, eve
    challenge_dry = backfill(story, "challenges", "shopper", dry_run="true")
    assert challenge_dry["outcomes"] == {
        "participants": 5,
        "participants_gaining": 2,
        "badges_awarded": 0,  # both already hold the reward badge
        "challenges_completed": 2,
        "points_awarded": 100,
        "progress_rows": 0,
    }
    started = backfill(story, "challenges", "shopper")
    runners.drain()
    assert job(story, started["job_id"])["outcomes"] == challenge_dry["outcomes"]

    state = story.get("/participants/ann/state")
    assert [b["badge"] for b in state["badges"]["earned"]] == ["three"]
    assert state["points"]["balance"] == 50
    rows = snapshot(db, project)
    assert {r[4] for r in rows["awards"]} == {"backfill"}
    assert {r[4] for r in rows["ledger"]} == {"backfill:challenge:shopper"}
    assert {r[3] for r in rows["completions"]} == {"backfill"}
    sources = {r[2]: r[3]["source"] for r in rows["facts"] if not r[2].startswith("custom.")}
    assert sources == {
        "badge.awarded": "backfill",
        "challenge.completed": "backfill",
        "points.awarded": "backfill:challenge:shopper",
        "tier.changed": "backfill",  # the reward's 50 points reach silver
    }
    assert state["tiers"][0]["level"] == "silver"


def test_facts_counted_live_once_the_badge_existed_are_not_counted_again(
    story: Story, runners: Runners, db: psycopg.Connection[Any]
) -> None:
    story.define("badges", BADGE)
    story.send("purchase", "cat")  # counted by the pipeline: cat's bucket holds 1
    assert bucket(db, story.tenant.project_id, "cat") == 1

    backfill(story, "badges", "three")
    runners.drain()

    assert bucket(db, story.tenant.project_id, "cat") == HISTORY["cat"] + 1
    assert [b["badge"] for b in story.get("/participants/cat/badges")["earned"]] == ["three"]


def test_a_second_backfill_changes_nothing(
    story: Story, runners: Runners, db: psycopg.Connection[Any]
) -> None:
    story.define("badges", BADGE)
    story.define("challenges", CHALLENGE)
    for segment, code in (("badges", "three"), ("challenges", "shopper")):
        backfill(story, segment, code)
        runners.drain()
    once = snapshot(db, story.tenant.project_id)

    for segment, code in (("badges", "three"), ("challenges", "shopper")):
        dry = backfill(story, segment, code, dry_run="true")
        again = backfill(story, segment, code)
        runners.drain()
        zero = {"participants": 5} | {k: 0 for k in dry["outcomes"] if k != "participants"}
        assert dry["outcomes"] == zero
        assert job(story, again["job_id"])["outcomes"] == zero

    assert snapshot(db, story.tenant.project_id) == once


def test_notify_false_records_outcomes_without_webhook_messages(
    story: Story, runners: Runners, db: psycopg.Connection[Any]
) -> None:
    subscribe_all(story)
    story.define("badges", BADGE)
    story.define("badges", {**BADGE, "code": "four", "name": "Four"} | _threshold(4))
    # A rule chained on the backfill's outcomes: its points are outcomes of the job too.
    per_badge = {"fact_type": "badge.awarded"}
    story.define(
        "points-rules",
        {"code": "per-badge", "name": "Per badge", "trigger": per_badge, "amount": {"fixed": 5}},
    )
    project = story.tenant.project_id
    messages = snapshot(db, project)["messages"][0][0]

    quiet = backfill(story, "badges", "three", notify="false")
    runners.drain()
    assert job(story, quiet["job_id"])["outcomes"]["badges_awarded"] == 3
    assert story.get("/participants/ann/points")["balance"] == 5  # the chain ran
    assert snapshot(db, project)["messages"][0][0] == messages

    loud = backfill(story, "badges", "four")
    runners.drain()
    assert job(story, loud["job_id"])["outcomes"]["badges_awarded"] == 2  # ann, eve
    owed = db.execute(
        "SELECT f.participant_id, f.fact_type, f.properties->>'badge' FROM webhook_messages m"
        " JOIN facts f USING (project_id, environment, fact_id) WHERE m.project_id = %s"
        " ORDER BY 1, 2",
        (project,),
    ).fetchall()
    assert owed == [
        ("ann", "badge.awarded", "four"),
        ("ann", "points.awarded", None),
        ("eve", "badge.awarded", "four"),
        ("eve", "points.awarded", None),
    ]


def _threshold(value: int) -> dict[str, Any]:
    return {"criteria": [{"criterion": PURCHASE, "threshold": value}]}


def uninterrupted_twin(story: Story, runners: Runners, database_url: str) -> Story:
    """A second project with the same history and definitions as `story`'s, whose
    challenge is backfilled without a break; `story`'s definitions are created too."""
    other = make_tenant(database_url, "uninterrupted")
    calm = Story(story.api, story.ingest, other, other.live_key)
    for participant, purchases in HISTORY.items():
        for n in range(purchases):
            calm.send("purchase", participant, {"n": n})
    for s in (story, calm):
        s.define("badges", BADGE)
        s.define("challenges", CHALLENGE)
    backfill(calm, "challenges", "shopper")
    runners.drain()
    return calm


def test_a_job_cut_short_resumes_after_its_lease_and_ends_as_an_uninterrupted_run(
    story: Story, runners: Runners, db: psycopg.Connection[Any], postgres_server: Server
) -> None:
    calm = uninterrupted_twin(story, runners, postgres_server.url)
    job_id = backfill(story, "challenges", "shopper")["job_id"]
    lease = timedelta(milliseconds=runners.settings.jobs_lease_ms)

    async def crash_and_resume() -> None:
        pool = make_pool(runners.settings)
        await pool.open()
        try:
            first, second = runners.runner(pool), runners.runner(pool)
            assert await first.run_once(max_chunks=1) == job_id  # then it "dies"
            cut = job(story, job_id)
            assert (cut["status"], cut["participants_done"]) == ("running", 2)
            assert await second.run_once() is None  # the lease holds: nobody takes over
            runners.ahead += lease
            assert await second.run_once(max_chunks=1) == job_id  # taken over at expiry
            # The first runner, back, finds its lease gone and applies nothing.
            assert await first.apply_next_chunk(job_id) is False
            for _ in range(len(HISTORY)):  # bounded: one chunk per call at most
                if not await second.apply_next_chunk(job_id):
                    break
        finally:
            await pool.close()

    asyncio.run(crash_and_resume())
    done = job(story, job_id)
    assert (done["status"], done["participants_done"]) == ("done", 5)
    assert done["cursor"] is None  # a finished job names no participant
    uninterrupted = story.api.get(f"{ADMIN}/jobs", headers=calm.headers).json()["items"][0]
    assert done["outcomes"] == uninterrupted["outcomes"]
    mine = snapshot(db, story.tenant.project_id)
    assert mine == snapshot(db, calm.tenant.project_id)
    assert {r[4] for r in mine["awards"]} == {"backfill:challenge:shopper"}  # reward badge


# A runner in its own process whose third chunk is written but not committed when the
# process is killed (SIGKILL: no cleanup, PostgreSQL sees the connection drop).
DOOMED_RUNNER = """
import asyncio, os, signal, sys
from bricqs_processor import jobs
from bricqs_processor.main import make_pool
from bricqs_processor.settings import ProcessorSettings

settings = ProcessorSettings(
    database_url=sys.argv[1], redis_url=sys.argv[2], rules_refresh_seconds=0,
    jobs_chunk_size=2, jobs_settle_ms=0, consumer_name="doomed",
)
advance, chunks = jobs.advance_job, []

async def advance_or_die(conn, job, **fields):
    chunks.append(job.job_id)
    if len(chunks) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    await advance(conn, job, **fields)

jobs.advance_job = advance_or_die

async def main():
    pool = make_pool(settings)
    await pool.open()
    await jobs.JobRunner(settings, pool, None).run_once()

asyncio.run(main())
"""


def test_a_runner_killed_inside_a_chunk_leaves_it_unapplied_and_the_job_ends_as_uninterrupted(
    story: Story,
    runners: Runners,
    db: psycopg.Connection[Any],
    postgres_server: Server,
    redis_server: Server,
) -> None:
    calm = uninterrupted_twin(story, runners, postgres_server.url)
    job_id = backfill(story, "challenges", "shopper")["job_id"]

    killed = subprocess.run(
        [sys.executable, "-c", DOOMED_RUNNER, postgres_server.url, redis_server.url],
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    cut = job(story, job_id)
    assert (cut["status"], cut["participants_done"], cut["cursor"]) == ("running", 4, "dan")
    # Two chunks committed (ann completed); the killed one (eve's) left nothing behind.
    assert [r[2] for r in snapshot(db, story.tenant.project_id)["completions"]] == ["ann"]
    assert bucket(db, story.tenant.project_id, "eve") == 0

    runners.ahead += timedelta(milliseconds=runners.settings.jobs_lease_ms)
    assert runners.drain() == [job_id]
    assert job(story, job_id)["status"] == "done"
    assert snapshot(db, story.tenant.project_id) == snapshot(db, calm.tenant.project_id)


def bucket(db: psycopg.Connection[Any], project_id: str, participant: str) -> int:
    row = db.execute(
        "SELECT count FROM criterion_progress WHERE project_id = %s AND environment = 'live'"
        " AND participant_id = %s",
        (project_id, participant),
    ).fetchone()
    return 0 if row is None else int(row[0])


def test_live_traffic_during_a_backfill_is_counted_once(
    story: Story, runners: Runners, db: psycopg.Connection[Any], postgres_server: Server
) -> None:
    story.define("badges", BADGE)
    project = story.tenant.project_id
    job_id = backfill(story, "badges", "three")["job_id"]

    async def interleave() -> None:
        pool = make_pool(runners.settings)
        await pool.open()
        rules = RuleCache(refresh_seconds=0)
        try:
            async with await psycopg.AsyncConnection.connect(postgres_server.url) as live:
                # A live batch for cat (2 purchases before the badge), counted by the
                # pipeline, not yet committed when the backfill reaches cat's chunk.
                async with live.transaction():
                    await process_envelopes(
                        live,
                        [envelope_of(project, "cat")],
                        idempotency_ttl=timedelta(days=1),
                        rules_for=rules,
                    )
                    running = asyncio.create_task(runners.runner(pool).run_once())
                    await _until_waiting_for_a_participant_lock(live, running)
                assert await running == job_id
        finally:
            await pool.close()

    asyncio.run(interleave())
    assert job(story, job_id)["status"] == "done"
    assert bucket(db, project, "cat") == 3  # 2 stored before + 1 live, each once
    earned = story.get("/participants/cat/badges")["earned"]
    assert [b["badge"] for b in earned] == ["three"]
    # After the backfill, live traffic adds to the rewritten buckets, once.
    story.send("purchase", "ann")
    assert bucket(db, project, "ann") == HISTORY["ann"] + 1


async def _until_waiting_for_a_participant_lock(
    conn: psycopg.AsyncConnection[Any], task: asyncio.Task[Any]
) -> None:
    """Until the backfill waits for the advisory lock `conn`'s transaction holds."""
    async with await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True) as watch:
        for _ in range(500):
            assert not task.done(), "the backfill did not wait for the live batch"
            cursor = await watch.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            row = await cursor.fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the backfill never reached the live batch's participant")


def test_another_project_and_environment_are_untouched(
    story: Story, runners: Runners, db: psycopg.Connection[Any], postgres_server: Server
) -> None:
    other = make_tenant(postgres_server.url, "bystander")
    bystander = Story(story.api, story.ingest, other, other.live_key)
    testing = Story(story.api, story.ingest, story.tenant, story.tenant.test_key)
    for s in (bystander, testing):
        for n in range(4):
            s.send("purchase", "ann", {"n": n})
        s.define("badges", BADGE)
    story.define("badges", BADGE)
    untouched = snapshot(db, other.project_id)
    test_env = [r for r in snapshot(db, story.tenant.project_id)["facts"] if r[0] == "test"]

    backfill(story, "badges", "three")
    runners.drain()

    assert snapshot(db, other.project_id) == untouched
    after = snapshot(db, story.tenant.project_id)
    assert [r for r in after["facts"] if r[0] == "test"] == test_env
    assert all(r[0] == "live" for name in ("progress", "awards") for r in after[name])
    assert bystander.get("/participants/ann/badges")["earned"] == []
    assert bucket(db, story.tenant.project_id, "ann") == HISTORY["ann"]


def test_routes_answer_problems_and_a_second_request_answers_the_job_under_way(
    story: Story, runners: Runners
) -> None:
    missing = story.api.post(f"{ADMIN}/badges/nope/backfill", headers=story.headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "definition_not_found")
    story.define("badges", BADGE | {"status": "paused"})
    paused = story.api.post(f"{ADMIN}/badges/three/backfill", headers=story.headers)
    assert (paused.status_code, paused.json()["code"]) == (409, "definition_not_active")
    unknown = story.api.get(f"{ADMIN}/jobs/job_{'0' * 26}", headers=story.headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "job_not_found")

    story.define("challenges", CHALLENGE | {"reward": None})
    first = story.api.post(f"{ADMIN}/challenges/shopper/backfill", headers=story.headers)
    again = story.api.post(f"{ADMIN}/challenges/shopper/backfill", headers=story.headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["job_id"] == first.json()["job_id"]
    listed = story.api.get(f"{ADMIN}/jobs", headers=story.headers, params={"limit": 1}).json()
    assert [j["job_id"] for j in listed["items"]] == [first.json()["job_id"]]
    runners.drain()
    # Another key's environment does not see the job.
    other = story.api.get(f"{ADMIN}/jobs/{first.json()['job_id']}", headers=_test_key(story))
    assert other.status_code == 404


def _test_key(story: Story) -> dict[str, str]:
    return {"X-API-Key": story.tenant.test_key}


def test_a_definition_changed_during_its_backfill_fails_the_job(
    story: Story, runners: Runners
) -> None:
    story.define("badges", BADGE)
    job_id = backfill(story, "badges", "three")["job_id"]
    assert runners.drain(max_chunks=1) == [job_id]
    changed = story.api.put(
        f"{ADMIN}/badges/three", headers=story.headers, json=BADGE | _threshold(2)
    )
    assert changed.status_code == 200, changed.text

    runners.ahead += timedelta(milliseconds=runners.settings.jobs_lease_ms)
    assert runners.drain() == [job_id]
    failed = job(story, job_id)
    assert (failed["status"], failed["participants_done"]) == ("failed", 2)
    assert "definition changed" in failed["error"]


def test_the_processor_housekeeping_runs_backfill_jobs(
    story: Story, redis_server: Server, postgres_server: Server
) -> None:
    from bricqs.redis_connect import connect_redis
    from bricqs_processor.housekeeping import Housekeeping

    story.define("badges", BADGE)
    job_id = backfill(story, "badges", "three")["job_id"]
    settings = runner_settings(postgres_server, redis_server.url, jobs_poll_ms=10)

    async def until_done() -> str:
        pool = make_pool(settings)
        await pool.open()
        redis = connect_redis(settings.redis_url, cluster=False, timeout_s=1.0)
        chores = Housekeeping(settings, redis, pool).tasks()
        try:
            for _ in range(500):
                status = str(job(story, job_id)["status"])
                if status in ("done", "failed"):
                    return status
                await asyncio.sleep(0.02)
            return "still running"
        finally:
            for task in chores:
                task.cancel()
            await asyncio.gather(*chores, return_exceptions=True)
            await redis.aclose()
            await pool.close()

    assert asyncio.run(until_done()) == "done"
    assert job(story, job_id)["outcomes"]["badges_awarded"] == 3


# Definitions whose judging differs by window: a backfill must reach what the engine
# reaches when the definitions exist before the facts.
WINDOWED = [
    (
        "badges",
        {
            "code": "streaky",
            "name": "Three in three days",
            "criteria": [
                {
                    "criterion": {**PURCHASE, "window": {"type": "rolling", "days": 3}},
                    "threshold": 3,
                }
            ],
        },
    ),
    (
        "badges",
        {
            "code": "weekly",
            "name": "Weekly spender",
            "repeatable": True,
            "criteria": [
                {
                    "criterion": {
                        **PURCHASE,
                        "aggregate": "sum",
                        "property": "amount",
                        "window": {
                            "type": "calendar",
                            "period": "week",
                            "timezone": "Europe/Paris",
                        },
                    },
                    "threshold": 60,
                }
            ],
        },
    ),
    (
        "badges",
        {
            "code": "explorer",
            "name": "Explorer",
            "criteria": [
                {
                    "criterion": {**PURCHASE, "aggregate": "distinct", "property": "sku"},
                    "threshold": 3,
                },
                {
                    "criterion": {**PURCHASE, "aggregate": "max", "property": "amount"},
                    "threshold": 40,
                },
            ],
        },
    ),
    (
        "challenges",
        {
            "code": "sprint",
            "name": "Sprint",
            "window": {"type": "rolling", "days": 7},
            "objectives": [
                {"code": "often", "criterion": PURCHASE, "target": 4},
                {
                    "code": "much",
                    "criterion": {**PURCHASE, "aggregate": "sum", "property": "amount"},
                    "target": 100,
                },
            ],
            "reward": {"points": 10},
        },
    ),
]


def random_history(project_id: str, seed: int) -> list[Envelope]:
    rng = random.Random(seed)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    return [
        Envelope(
            event_id=new_event_id(),
            project_id=project_id,
            environment="live",
            event_name="purchase",
            participant_id=f"p{rng.randrange(6)}",
            properties={"amount": rng.randrange(1, 50), "sku": rng.choice("abcde")},
            occurred_at=(at := start + timedelta(minutes=rng.randrange(60 * 24 * 30))),
            received_at=at,
        )
        for _ in range(80)
    ]


def process(url: str, envelopes: list[Envelope]) -> None:
    async def go() -> None:
        rules = RuleCache(refresh_seconds=0)
        async with await psycopg.AsyncConnection.connect(url) as conn:
            for n in range(0, len(envelopes), 10):
                async with conn.transaction():
                    await process_envelopes(
                        conn,
                        envelopes[n : n + 10],
                        idempotency_ttl=timedelta(days=1),
                        rules_for=rules,
                    )

    asyncio.run(go())


def outcomes_of(db: psycopg.Connection[Any], project_id: str) -> dict[str, list[Any]]:
    queries = {
        "progress": "SELECT criterion_id, participant_id, bucket, count, sum, max"
        " FROM criterion_progress WHERE project_id = %s ORDER BY 1, 2, 3",
        "distinct": "SELECT criterion_id, participant_id, bucket, value"
        " FROM criterion_distinct WHERE project_id = %s ORDER BY 1, 2, 3, 4",
        "awards": "SELECT badge_code, participant_id, award_key FROM badge_awards"
        " WHERE project_id = %s ORDER BY 1, 2, 3",
        "completions": "SELECT challenge_code, participant_id FROM challenge_completions"
        " WHERE project_id = %s ORDER BY 1, 2",
        "balances": "SELECT participant_id, balance FROM points_balances"
        " WHERE project_id = %s ORDER BY 1",
    }
    return rows_of(db, project_id, queries)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_backfill_reaches_what_the_engine_reaches_with_the_definitions_there_first(
    seed: int,
    story: Story,
    runners: Runners,
    db: psycopg.Connection[Any],
    postgres_server: Server,
) -> None:
    late = make_tenant(postgres_server.url, "late")
    after = Story(story.api, story.ingest, late, late.live_key)
    for segment, body in WINDOWED:
        story.define(segment, body)
    process(postgres_server.url, random_history(story.tenant.project_id, seed))
    process(postgres_server.url, random_history(late.project_id, seed))
    for segment, body in WINDOWED:
        after.define(segment, body)
        backfill(after, segment, body["code"])
        runners.drain()

    engine = outcomes_of(db, story.tenant.project_id)
    backfilled = outcomes_of(db, late.project_id)
    assert engine["awards"], "the history reaches some badges"
    # The story's own purchases (HISTORY, no amount) are the engine project's only extra.
    extra = set(HISTORY)
    for name, rows in engine.items():
        kept = [r for r in rows if not ({r[0], r[1]} & extra)]
        assert kept == backfilled[name], name


def test_the_runner_outlives_a_failed_round_and_works_the_job_in_a_later_one(
    story: Story, runners: Runners, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bricqs_processor import jobs

    story.define("badges", BADGE)
    job_id = backfill(story, "badges", "three")["job_id"]
    claim, rounds = jobs.claim_job, []

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        rounds.append(1)
        if len(rounds) == 1:
            raise RuntimeError("a bug in one round")
        return await claim(*args, **kwargs)

    monkeypatch.setattr(jobs, "claim_job", failing_once)
    settings = msgspec.structs.replace(runners.settings, jobs_poll_ms=10)

    async def until_done() -> str:
        pool = make_pool(settings)
        await pool.open()
        running = asyncio.create_task(JobRunner(settings, pool, None).run())
        try:
            for _ in range(500):
                status = str(job(story, job_id)["status"])
                if status == "done" or running.done():
                    return status
                await asyncio.sleep(0.02)
            return "still pending"
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await pool.close()

    assert asyncio.run(until_done()) == "done"
    assert len(rounds) >= 2


def test_a_dry_run_as_a_job_counts_what_the_inline_one_answers_and_writes_nothing(
    story: Story, runners: Runners, db: psycopg.Connection[Any]
) -> None:
    story.define("badges", BADGE)
    story.define("challenges", CHALLENGE)
    project = story.tenant.project_id
    inline = backfill(story, "challenges", "shopper", dry_run="true")
    before = snapshot(db, project)

    started = backfill(story, "challenges", "shopper", dry_run="true", as_job="true")
    assert (started["dry_run"], started["status"]) == (True, "pending")
    # A real backfill of the same challenge is a job of its own, not the dry one.
    real = backfill(story, "challenges", "shopper")
    assert real["job_id"] != started["job_id"] and real["dry_run"] is False
    assert runners.drain() == [started["job_id"]]  # the older job first

    counted = job(story, started["job_id"])
    assert (counted["status"], counted["outcomes"]) == ("done", inline["outcomes"])
    assert snapshot(db, project)["awards"] == before["awards"] == []
    assert snapshot(db, project) == before
    runners.drain()
    assert job(story, real["job_id"])["outcomes"] == inline["outcomes"]
