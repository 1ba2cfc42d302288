"""Reads from the Redis mirror: pages by offset, the entries around a participant, a board
defined after the points were earned, a lost mirror, and `bricqs-admin leaderboard rebuild`."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from bricqs.admin import main as admin
from bricqs_devstack.servers import Server
from tests.conftest import Story

EARN = {
    "code": "pts",
    "name": "Points",
    "trigger": {"fact_type": "custom.earn"},
    "amount": {"property": "n"},
}


def _ids(entries: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(e["rank"], e["participant_id"]) for e in entries]


def _earn_all(story: Story) -> None:
    # p0 … p9 with 10, 20, … 100 points: p9 leads.
    for i in range(10):
        story.send("earn", f"p{i}", {"n": 10 * (i + 1)})


def test_a_board_defined_after_the_points_ranks_them_and_pages_by_offset(story: Story) -> None:
    story.define("points-rules", EARN)
    _earn_all(story)
    story.define("leaderboards", {"code": "all", "name": "All"})
    page = story.get("/leaderboards/all", limit=3, offset=2)
    assert _ids(page["entries"]) == [(3, "p7"), (4, "p6"), (5, "p5")]
    assert (page["total_participants"], page["offset"], page["next_offset"]) == (10, 2, 5)
    last = story.get("/leaderboards/all", limit=3, offset=9)
    assert (_ids(last["entries"]), last["next_offset"]) == ([(10, "p0")], None)
    # Kept incrementally from then on.
    story.send("earn", "p0", {"n": 1000})
    assert _ids(story.get("/leaderboards/all", limit=1)["entries"]) == [(1, "p0")]


def test_around_me_gives_the_k_above_and_below(story: Story) -> None:
    story.define("points-rules", EARN)
    story.define("leaderboards", {"code": "all", "name": "All"})
    _earn_all(story)
    around = story.get("/leaderboards/all/around/p5", k=2)
    assert _ids(around["entries"]) == [(3, "p7"), (4, "p6"), (5, "p5"), (6, "p4"), (7, "p3")]
    assert around["total_participants"] == 10
    top = story.get("/leaderboards/all/around/p9", k=2)
    assert _ids(top["entries"]) == [(1, "p9"), (2, "p8"), (3, "p7")]
    missing = story.api.get("/api/v1/gamify/leaderboards/all/around/nobody", headers=story.headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_ranked")


def test_a_lost_mirror_is_reloaded_from_postgresql(story: Story, redis_server: Server) -> None:
    story.define("points-rules", EARN)
    story.define("leaderboards", {"code": "all", "name": "All"})
    _earn_all(story)
    before = story.get("/leaderboards/all", limit=20)
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    assert story.get("/leaderboards/all", limit=20) == before
    assert story.get("/leaderboards/all/rank/p3")["rank"] == 7


def test_admin_rebuild_repairs_a_mirror_that_drifted(
    story: Story, redis_server: Server, postgres_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    story.define("points-rules", EARN)
    story.define("leaderboards", {"code": "all", "name": "All"})
    _earn_all(story)
    before = story.get("/leaderboards/all", limit=20)
    with redis.Redis.from_url(redis_server.url) as client:
        (zset,) = [
            k for k in client.keys("bricqs:lb:*:z:*") if story.tenant.project_id.encode() in k
        ]
        client.zadd(zset, {b"00000000000000|intruder": -1e9})
    assert story.get("/leaderboards/all", limit=1)["entries"][0]["participant_id"] == "intruder"
    code = admin(
        [
            "leaderboard",
            "rebuild",
            "all",
            "--project",
            story.tenant.project_id,
            "--database-url",
            postgres_server.url,
            "--redis-url",
            redis_server.url,
            "--json",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"leaderboard": "all", "participants": 10}
    assert story.get("/leaderboards/all", limit=20) == before
