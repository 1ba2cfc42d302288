"""bench/drain_ab.py in a short form against the test servers, and the drain's isolation
from earlier drains. The numbers are not judged here."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from bench.processor import drain
from bench.stack import Stack
from bricqs_devstack.servers import Server
from tests.perf.test_bench_smoke import run_bench

pytestmark = pytest.mark.slow


def test_drain_ab_prints_medians_per_tree_and_rule_count(
    redis_server: Server, postgres_server: Server
) -> None:
    args = ("--rules", "0,20", "--rounds", "2", "--events", "60", "--tree", "a=", "--tree", "b=")
    out = run_bench(redis_server, postgres_server, "bench.drain_ab", *args)
    rows = [line.split() for line in out.splitlines()[1:]]
    assert sorted((r[0], r[1]) for r in rows) == [("a", "0"), ("a", "20"), ("b", "0"), ("b", "20")]
    # Each row: two rates (one a round), and a 0-rule row is its own base.
    assert all(len(r[-1].split(",")) == 2 and float(r[2].replace(",", "")) > 0 for r in rows)
    assert {r[3] for r in rows if r[1] == "0"} == {"1.00"}


def test_a_drain_drops_the_clock_work_left_by_earlier_drains_only(
    redis_server: Server, postgres_server: Server
) -> None:
    stack = Stack.start(redis_server.url.rsplit("/", 1)[0] + "/1", postgres_server.url)
    try:
        earlier = stack.project("drain-20")
        other = stack.project("someone else's")
        # Far ahead: the scheduler beside the consumer leaves both alone.
        ends = datetime(2100, 1, 1, tzinfo=UTC)
        with psycopg.connect(postgres_server.url, autocommit=True) as db:
            for project in (earlier, other):
                db.execute(
                    "INSERT INTO streak_state (project_id, environment, streak_code,"
                    " participant_id, last_index, last_run_length, longest, timezone,"
                    " periods, deadline_period, ends_at)"
                    " VALUES (%s, 'live', 'daily', 'ann', 0, 1, 1, 'UTC', '{[0,0]}', 1, %s)",
                    (project.project_id, ends),
                )
        drain(stack, rule_count=0, events=20)
        with psycopg.connect(postgres_server.url, autocommit=True) as db:
            left = db.execute(
                "SELECT project_id FROM streak_state WHERE project_id = ANY(%s)"
                " AND deadline_period IS NOT NULL",
                ([earlier.project_id, other.project_id],),
            ).fetchall()
    finally:
        stack.close()
    assert left == [(other.project_id,)]
