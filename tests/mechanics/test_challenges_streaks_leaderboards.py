"""Challenges, streaks (time zones, DST, grace), leaderboards, and chains of rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import Story

PURCHASE = {"fact_type": "custom.purchase"}


def test_challenge_completes_when_every_objective_is_met_and_pays_its_reward(story: Story) -> None:
    story.define(
        "badges",
        {
            "code": "champ",
            "name": "Champion",
            "criteria": [{"criterion": {"fact_type": "custom.never"}, "threshold": 1}],
        },
    )
    story.define(
        "challenges",
        {
            "code": "starter",
            "name": "Starter",
            "objectives": [
                {"code": "buy-3", "criterion": PURCHASE, "target": 3},
                {"code": "review", "criterion": {"fact_type": "custom.review"}, "target": 1},
            ],
            "reward": {"points": 50, "badge": "champ"},
        },
    )
    for _ in range(3):
        story.send("purchase", "c1")
    progress = story.get("/participants/c1/challenges")["items"][0]
    assert not progress["completed"]
    assert [(o["code"], o["value"], o["met"]) for o in progress["objectives"]] == [
        ("buy-3", 3, True),
        ("review", 0, False),
    ]
    effects = story.send("review", "c1")["effects"]
    assert effects["challenges"][0]["completed"] is True
    assert story.get("/participants/c1/points")["balance"] == 50
    assert [b["badge"] for b in story.get("/participants/c1/badges")["earned"]] == ["champ"]
    story.send("review", "c1")  # completing again changes nothing
    assert story.get("/participants/c1/points")["balance"] == 50


def test_challenge_fixed_window_ignores_facts_outside_it(story: Story) -> None:
    story.define(
        "challenges",
        {
            "code": "may",
            "name": "May",
            "window": {
                "type": "fixed",
                "start": "2026-05-01T00:00:00Z",
                "end": "2026-06-01T00:00:00Z",
            },
            "objectives": [{"code": "o", "criterion": PURCHASE, "target": 2}],
        },
    )
    story.send("purchase", "c2", timestamp="2026-04-30T23:59:59Z")
    story.send("purchase", "c2", timestamp="2026-06-01T00:00:00Z")
    story.send("purchase", "c2", timestamp="2026-05-01T00:00:00Z")
    assert story.get("/participants/c2/challenges")["items"][0]["completed"] is False
    story.send("purchase", "c2", timestamp="2026-05-31T23:59:59Z")
    assert story.get("/participants/c2/challenges")["items"][0]["completed"] is True


def streak_lengths(story: Story, pid: str, stamps: list[str]) -> list[int | None]:
    lengths = []
    for stamp in stamps:
        streaks = story.send("workout", pid, timestamp=stamp)["effects"].get("streaks")
        lengths.append(streaks[0]["length"] if streaks else None)
    return lengths


def test_daily_streak_across_midnight_in_a_non_utc_zone(story: Story) -> None:
    story.define(
        "streaks",
        {
            "code": "paris",
            "name": "Paris days",
            "timezone": "Europe/Paris",
            "trigger": {"fact_type": "custom.workout"},
        },
    )
    story.define(
        "streaks", {"code": "utc", "name": "UTC days", "trigger": {"fact_type": "custom.workout"}}
    )
    # 22:30 and 23:30 UTC on one UTC day are two Paris days (UTC+2 in June).
    story.send("workout", "s1", timestamp="2026-06-10T21:30:00Z")
    story.send("workout", "s1", timestamp="2026-06-10T22:30:00Z")
    states = {s["streak"]: s for s in story.get("/participants/s1/streaks")["items"]}
    assert states["paris"]["longest"] == 2
    assert states["utc"]["longest"] == 1


def test_daily_streak_across_a_dst_change(story: Story) -> None:
    story.define(
        "streaks",
        {
            "code": "dst",
            "name": "DST",
            "timezone": "Europe/Paris",
            "trigger": {"fact_type": "custom.workout"},
        },
    )
    # Paris moves from UTC+1 to UTC+2 at 01:00 UTC on 29 March 2026 (a 23-hour day).
    # 23:30 local on the 28th, 29th and 30th, then 00:30 local on the 31st: four days.
    assert streak_lengths(
        story,
        "s2",
        [
            "2026-03-28T22:30:00Z",
            "2026-03-29T21:30:00Z",
            "2026-03-30T21:30:00Z",
            "2026-03-30T22:30:00Z",
        ],
    ) == [1, 2, 3, 4]
    # 22:30 UTC is 23:30 local on the 28th but 00:30 local on the 30th: the 29th is
    # missed, which a fixed UTC+1 offset would not see.
    assert streak_lengths(story, "s3", ["2026-03-28T22:30:00Z", "2026-03-29T22:30:00Z"]) == [1, 1]


def test_grace_hours_let_activity_after_midnight_count_for_the_day_before(story: Story) -> None:
    story.define(
        "streaks",
        {
            "code": "grace",
            "name": "Grace",
            "grace_hours": 2,
            "trigger": {"fact_type": "custom.workout"},
        },
    )
    assert streak_lengths(story, "s4", ["2026-06-01T10:00:00Z", "2026-06-03T01:59:00Z"]) == [1, 2]
    assert streak_lengths(story, "s5", ["2026-06-01T10:00:00Z", "2026-06-03T02:00:00Z"]) == [1, 1]


def test_streak_in_the_participants_own_time_zone(story: Story) -> None:
    story.define(
        "streaks",
        {
            "code": "local",
            "name": "Local",
            "timezone": "participant",
            "trigger": {"fact_type": "custom.workout"},
        },
    )
    response = story.api.patch(
        "/api/v1/gamify/participants/s6", headers=story.headers, json={"timezone": "Asia/Tokyo"}
    )
    assert response.status_code == 200
    # 23:00 and 01:00 in Tokyo (UTC+9): two local days within two UTC hours.
    assert streak_lengths(story, "s6", ["2026-06-01T14:00:00Z", "2026-06-01T16:00:00Z"]) == [1, 2]
    bad = story.api.patch(
        "/api/v1/gamify/participants/s6", headers=story.headers, json={"timezone": "Moon/Base"}
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "timezone"


def test_current_streak_and_at_risk_flag_are_judged_now(story: Story) -> None:
    story.define(
        "streaks", {"code": "now", "name": "Now", "trigger": {"fact_type": "custom.workout"}}
    )
    now = datetime.now(UTC) - timedelta(seconds=1)

    def stamp(days_ago: int) -> str:
        return (now - timedelta(days=days_ago)).isoformat()

    for pid, days in (("fresh", [1, 0]), ("risky", [2, 1]), ("broken", [4, 3])):
        for d in days:
            story.send("workout", pid, timestamp=stamp(d))
    state = {
        pid: story.get(f"/participants/{pid}/streaks")["items"][0]
        for pid in ("fresh", "risky", "broken")
    }
    assert (state["fresh"]["current"], state["fresh"]["at_risk"]) == (2, False)
    assert (state["risky"]["current"], state["risky"]["at_risk"]) == (2, True)
    assert (state["broken"]["current"], state["broken"]["longest"]) == (0, 2)


def test_points_leaderboard_ranks_ties_by_who_reached_the_score_first(story: Story) -> None:
    story.define(
        "points-rules",
        {
            "code": "pts",
            "name": "Points",
            "trigger": {"fact_type": "custom.earn"},
            "amount": {"property": "n"},
        },
    )
    story.define("leaderboards", {"code": "all", "name": "All time"})
    story.send("earn", "late", {"n": 30}, timestamp="2026-05-02T10:00:00Z")
    story.send("earn", "early", {"n": 10}, timestamp="2026-05-01T09:00:00Z")
    story.send("earn", "early", {"n": 20}, timestamp="2026-05-01T10:00:00Z")
    story.send("earn", "low", {"n": 5}, timestamp="2026-05-01T10:00:00Z")
    board = story.get("/leaderboards/all", limit=2)
    assert board["entries"] == [
        {"rank": 1, "participant_id": "early", "score": 30},
        {"rank": 2, "participant_id": "late", "score": 30},
    ]
    assert board["total_participants"] == 3
    rank = story.get("/leaderboards/all/rank/low")
    assert (rank["rank"], rank["score"], rank["percentile"]) == (3, 5, 0.0)
    assert story.get("/leaderboards/all/rank/early")["percentile"] == 66.67
    missing = story.api.get("/api/v1/gamify/leaderboards/all/rank/nobody", headers=story.headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_ranked")
    # Today's board holds only what was earned today.
    story.send("earn", "low", {"n": 1})
    assert story.get("/leaderboards/all", period="daily")["entries"] == [
        {"rank": 1, "participant_id": "low", "score": 1}
    ]


def test_criterion_leaderboard_by_best_score_this_week(story: Story) -> None:
    story.define(
        "leaderboards",
        {
            "code": "best",
            "name": "Best run",
            "metric": "criterion",
            "period": "weekly",
            "criterion": {"fact_type": "custom.run", "aggregate": "max", "property": "score"},
        },
    )
    for pid, score in (("a", 10), ("b", 30), ("a", 40), ("c", 30)):
        story.send("run", pid, {"score": score})
    board = story.get("/leaderboards/best")
    assert [(e["participant_id"], e["score"]) for e in board["entries"]] == [
        ("a", 40),
        ("b", 30),
        ("c", 30),
    ]
    wrong = story.api.get(
        "/api/v1/gamify/leaderboards/best", headers=story.headers, params={"period": "daily"}
    )
    assert wrong.status_code == 422


def test_system_facts_trigger_rules_and_cycles_are_cut(story: Story) -> None:
    story.define(
        "badges",
        {
            "code": "first",
            "name": "First",
            "criteria": [{"criterion": {"fact_type": "custom.ping"}, "threshold": 1}],
        },
    )
    story.define(
        "points-rules",
        {
            "code": "bonus",
            "name": "Badge bonus",
            "amount": {"fixed": 100},
            "trigger": {
                "fact_type": "badge.awarded",
                "where": {"path": "badge", "op": "eq", "value": "first"},
            },
        },
    )
    story.define(
        "points-rules",
        {
            "code": "echo",
            "name": "Echo",
            "amount": {"fixed": 1},
            "trigger": {"fact_type": "points.awarded"},
        },
    )
    story.send("ping", "chain")
    # badge at depth 0, bonus at depth 1, then echo on each points.awarded until the
    # chain is cut at depth 5: 100 + 1 + 1 + 1 = 103.
    assert story.get("/participants/chain/points")["balance"] == 103
    facts = story.get("/participants/chain/facts", limit=200)["items"]
    assert sorted({f["fact_type"] for f in facts}) == [
        "badge.awarded",
        "custom.ping",
        "points.awarded",
    ]
