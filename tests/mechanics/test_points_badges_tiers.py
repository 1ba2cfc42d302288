"""Points, badges and tiers fire exactly at their thresholds and window edges, not before."""

from __future__ import annotations

from typing import Any

from tests.conftest import Story

PURCHASE = {"fact_type": "custom.purchase"}


def balance(story: Story, pid: str) -> int:
    return int(story.get(f"/participants/{pid}/points")["balance"])


def earned_badges(story: Story, pid: str) -> list[str]:
    return [b["badge"] for b in story.get(f"/participants/{pid}/badges")["earned"]]


def test_fixed_and_proportional_points_with_rounding_and_conditions(story: Story) -> None:
    story.define(
        "points-rules",
        {
            "code": "visit",
            "name": "Visit",
            "amount": {"fixed": 5},
            "trigger": {"fact_type": "custom.login"},
        },
    )
    story.define(
        "points-rules",
        {
            "code": "spend",
            "name": "Spend",
            "trigger": {**PURCHASE, "where": {"path": "currency", "op": "eq", "value": "USD"}},
            "amount": {"property": "amount", "multiplier": 1.5, "rounding": "floor"},
        },
    )
    story.define(
        "points-rules",
        {
            "code": "spend-up",
            "name": "Spend (ceil)",
            "trigger": PURCHASE,
            "amount": {"property": "amount", "multiplier": 0.1, "rounding": "ceil"},
        },
    )
    story.send("login", "p1")
    story.send("purchase", "p1", {"amount": 49.99, "currency": "USD"})  # 74 + ceil(4.999)=5
    story.send("purchase", "p1", {"amount": 10, "currency": "EUR"})  # 0 + 1
    story.send("purchase", "p1", {"amount": "lots", "currency": "USD"})  # not a number: 0 + 0
    assert balance(story, "p1") == 5 + 74 + 5 + 1
    ledger = story.get("/participants/p1/points/transactions")["items"]
    assert sorted(e["amount"] for e in ledger) == [1, 5, 5, 74]


def test_daily_cap_stops_at_the_cap_exactly_and_resets_next_day(story: Story) -> None:
    story.define(
        "points-rules",
        {
            "code": "click",
            "name": "Click",
            "amount": {"fixed": 10},
            "trigger": {"fact_type": "custom.click"},
            "cap": {"amount": 25, "period": "day"},
        },
    )
    effects = [
        story.send("click", "p2", timestamp=f"2026-05-01T0{h}:00:00Z")["effects"] for h in range(4)
    ]
    assert [e.get("points", [{}])[0].get("amount") for e in effects] == [10, 10, 5, None]
    story.send("click", "p2", timestamp="2026-05-02T00:00:00Z")
    assert balance(story, "p2") == 35


def test_count_badge_is_awarded_at_the_threshold_once(story: Story) -> None:
    story.define(
        "badges",
        {
            "code": "regular",
            "name": "Regular",
            "criteria": [{"criterion": PURCHASE, "threshold": 3}],
        },
    )
    for n in range(1, 5):
        effects = story.send("purchase", "p3")["effects"]
        assert ("badges" in effects) == (n == 3), n
    assert earned_badges(story, "p3") == ["regular"]


def test_sum_distinct_and_max_criteria_combined(story: Story) -> None:
    story.define(
        "badges",
        {
            "code": "collector",
            "name": "Collector",
            "combine": "all",
            "criteria": [
                {
                    "criterion": {**PURCHASE, "aggregate": "sum", "property": "amount"},
                    "threshold": 100,
                },
                {
                    "criterion": {**PURCHASE, "aggregate": "distinct", "property": "sku"},
                    "threshold": 3,
                },
                {
                    "criterion": {**PURCHASE, "aggregate": "max", "property": "amount"},
                    "threshold": 50,
                },
            ],
        },
    )
    story.send("purchase", "p4", {"amount": 40, "sku": "a"})
    story.send("purchase", "p4", {"amount": 40, "sku": "a"})
    story.send("purchase", "p4", {"amount": 19, "sku": "b"})  # sum 99, 2 skus, max 40
    assert earned_badges(story, "p4") == []
    progress = story.get("/participants/p4/badges")["not_earned"][0]["progress"]
    assert [p["value"] for p in progress] == [99, 2, 40]
    story.send("purchase", "p4", {"amount": 1, "sku": "c"})  # sum 100, 3 skus, max 40
    assert earned_badges(story, "p4") == []
    story.send("purchase", "p4", {"amount": 50, "sku": "c"})  # max reaches 50
    assert earned_badges(story, "p4") == ["collector"]


def test_any_combination_needs_one_criterion(story: Story) -> None:
    story.define(
        "badges",
        {
            "code": "either",
            "name": "Either",
            "combine": "any",
            "criteria": [
                {"criterion": PURCHASE, "threshold": 5},
                {"criterion": {"fact_type": "custom.review"}, "threshold": 1},
            ],
        },
    )
    story.send("purchase", "p5")
    assert earned_badges(story, "p5") == []
    story.send("review", "p5")
    assert earned_badges(story, "p5") == ["either"]


def test_rolling_window_counts_only_facts_within_n_days(story: Story) -> None:
    story.define(
        "badges",
        {
            "code": "weekly-pair",
            "name": "Two in a week",
            "criteria": [
                {
                    "criterion": {**PURCHASE, "window": {"type": "rolling", "days": 7}},
                    "threshold": 2,
                }
            ],
        },
    )
    story.send("purchase", "a", timestamp="2026-05-01T12:00:00Z")
    story.send("purchase", "a", timestamp="2026-05-08T12:00:00Z")  # day 8: outside 7 days
    assert earned_badges(story, "a") == []
    story.send("purchase", "b", timestamp="2026-05-01T12:00:00Z")
    story.send("purchase", "b", timestamp="2026-05-07T23:59:00Z")  # day 7: inside
    assert earned_badges(story, "b") == ["weekly-pair"]


def test_rolling_window_outcome_does_not_depend_on_arrival_order(story: Story) -> None:
    story.define(
        "badges",
        {
            "code": "three-in-3",
            "name": "Three in 3 days",
            "criteria": [
                {
                    "criterion": {**PURCHASE, "window": {"type": "rolling", "days": 3}},
                    "threshold": 3,
                }
            ],
        },
    )
    for day in (3, 1, 2):  # the latest first
        story.send("purchase", "late", timestamp=f"2026-05-0{day}T10:00:00Z")
    assert earned_badges(story, "late") == ["three-in-3"]


def test_repeatable_badge_is_awarded_once_per_calendar_week(story: Story) -> None:
    window = {"type": "calendar", "period": "week", "timezone": "UTC"}
    story.define(
        "badges",
        {
            "code": "busy-week",
            "name": "Busy week",
            "repeatable": True,
            "criteria": [{"criterion": {**PURCHASE, "window": window}, "threshold": 2}],
        },
    )
    for day in ("04", "05", "06", "11", "12"):  # Mon-Wed of one week, Mon-Tue of the next
        story.send("purchase", "p6", timestamp=f"2026-05-{day}T10:00:00Z")
    awards = story.get("/participants/p6/badges")["earned"]
    assert sorted(a["award_key"] for a in awards) == ["w:2026-W19", "w:2026-W20"]


def test_tier_changes_exactly_at_min_points(story: Story) -> None:
    story.define(
        "tiers",
        {
            "code": "status",
            "name": "Status",
            "levels": [
                {"code": "bronze", "name": "Bronze", "min_points": 0},
                {"code": "silver", "name": "Silver", "min_points": 100},
                {"code": "gold", "name": "Gold", "min_points": 300},
            ],
        },
    )
    story.define(
        "points-rules",
        {
            "code": "pts",
            "name": "Points",
            "trigger": {"fact_type": "custom.earn"},
            "amount": {"property": "n"},
        },
    )
    story.send("earn", "p7", {"n": 99})
    tier: dict[str, Any] = story.get("/participants/p7/tier")["items"][0]
    assert (tier["level"], tier["points_to_next"]) == ("bronze", 1)
    effects = story.send("earn", "p7", {"n": 1})["effects"]
    assert effects["tiers"] == [{"tier": "status", "from": "bronze", "to": "silver"}]
    story.send("earn", "p7", {"n": 500})
    tier = story.get("/participants/p7/tier")["items"][0]
    assert (tier["level"], tier["next_level"], tier["points_to_next"]) == ("gold", None, None)
    # Spending does not lower a lifetime tier.
    response = story.api.post(
        "/api/v1/gamify/points/deduct",
        headers=story.headers,
        json={"participant_id": "p7", "amount": 600},
    )
    assert response.json()["balance"] == 0
    assert story.get("/participants/p7/tier")["items"][0]["level"] == "gold"
