"""Definitions are validated on write: types by msgspec, meaning by semantic checks, each
refusal with its field path."""

from __future__ import annotations

from typing import Any

import pytest

from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import Badge, Challenge, Leaderboard, PointsRule, Streak, Tier

TRIGGER = {"fact_type": "custom.purchase"}
CRITERION = {"fact_type": "custom.purchase"}

INVALID = [
    (
        PointsRule,
        {"code": "Bad Code", "name": "x", "trigger": TRIGGER, "amount": {"fixed": 1}},
        "code",
    ),
    (PointsRule, {"code": "p", "name": "x", "trigger": TRIGGER, "amount": {}}, "amount"),
    (
        PointsRule,
        {"code": "p", "name": "x", "trigger": TRIGGER, "amount": {"fixed": 1, "property": "a"}},
        "amount",
    ),
    (
        PointsRule,
        {"code": "p", "name": "x", "trigger": TRIGGER, "amount": {"fixed": -1}},
        "amount.fixed",
    ),
    (PointsRule, {"code": "p", "name": "x", "amount": {"fixed": 1}}, "trigger"),
    (
        PointsRule,
        {
            "code": "p",
            "name": "x",
            "trigger": {**TRIGGER, "where": {"path": "a", "op": "like"}},
            "amount": {"fixed": 1},
        },
        "trigger.where.op",
    ),
    (
        PointsRule,
        {
            "code": "p",
            "name": "x",
            "trigger": {**TRIGGER, "where": {"all": []}},
            "amount": {"fixed": 1},
        },
        "trigger.where.all",
    ),
    (
        PointsRule,
        {
            "code": "p",
            "name": "x",
            "trigger": TRIGGER,
            "amount": {"fixed": 1},
            "cap": {"amount": 0, "period": "day"},
        },
        "cap.amount",
    ),
    (
        PointsRule,
        {"code": "p", "name": "x", "trigger": TRIGGER, "amount": {"fixed": 1}, "extra": 1},
        "extra",
    ),
    (Badge, {"code": "b", "name": "x", "criteria": []}, "criteria"),
    (
        Badge,
        {
            "code": "b",
            "name": "x",
            "criteria": [{"criterion": {**CRITERION, "aggregate": "sum"}, "threshold": 1}],
        },
        "criteria[0].criterion.property",
    ),
    (
        Badge,
        {"code": "b", "name": "x", "criteria": [{"criterion": CRITERION, "threshold": 0}]},
        "criteria[0].threshold",
    ),
    (
        Badge,
        {
            "code": "b",
            "name": "x",
            "repeatable": True,
            "criteria": [{"criterion": CRITERION, "threshold": 1}],
        },
        "repeatable",
    ),
    (
        Badge,
        {
            "code": "b",
            "name": "x",
            "criteria": [
                {"criterion": {**CRITERION, "window": {"type": "rolling"}}, "threshold": 1}
            ],
        },
        "criteria[0].criterion.window.days",
    ),
    (
        Badge,
        {
            "code": "b",
            "name": "x",
            "criteria": [
                {
                    "criterion": {
                        **CRITERION,
                        "window": {
                            "type": "calendar",
                            "period": "week",
                            "timezone": "Mars/Olympus",
                        },
                    },
                    "threshold": 1,
                }
            ],
        },
        "criteria[0].criterion.window.timezone",
    ),
    (
        Challenge,
        {
            "code": "c",
            "name": "x",
            "objectives": [
                {"code": "o", "criterion": CRITERION, "target": 1},
                {"code": "o", "criterion": CRITERION, "target": 2},
            ],
        },
        "objectives",
    ),
    (
        Challenge,
        {
            "code": "c",
            "name": "x",
            "objectives": [{"code": "o", "criterion": CRITERION, "target": 1}],
            "window": {
                "type": "fixed",
                "start": "2026-02-01T00:00:00Z",
                "end": "2026-01-01T00:00:00Z",
            },
        },
        "window.end",
    ),
    (Streak, {"code": "s", "name": "x", "trigger": TRIGGER, "period": "year"}, "period"),
    (
        Streak,
        {"code": "s", "name": "x", "trigger": TRIGGER, "timezone": "Nowhere/City"},
        "timezone",
    ),
    (Leaderboard, {"code": "l", "name": "x", "metric": "criterion"}, "criterion"),
    (
        Tier,
        {"code": "t", "name": "x", "levels": [{"code": "a", "name": "A", "min_points": 10}]},
        "levels[0].min_points",
    ),
    (
        Tier,
        {
            "code": "t",
            "name": "x",
            "levels": [
                {"code": "a", "name": "A", "min_points": 0},
                {"code": "b", "name": "B", "min_points": 0},
            ],
        },
        "levels",
    ),
]


@pytest.mark.parametrize(
    ("schema", "raw", "field"), INVALID, ids=[f"{s.__name__}-{f}" for s, _, f in INVALID]
)
def test_invalid_definition_is_refused_naming_the_field(
    schema: Any, raw: dict[str, Any], field: str
) -> None:
    result = parse_definition(schema, raw)
    assert isinstance(result, list), result
    assert field in [e.field for e in result], result


def test_valid_definitions_of_every_kind_parse() -> None:
    window = {"type": "calendar", "period": "week", "timezone": "Europe/Paris"}
    cases = [
        (
            PointsRule,
            {
                "code": "p",
                "name": "x",
                "trigger": TRIGGER,
                "amount": {"property": "amount", "multiplier": 1.5, "rounding": "round"},
                "cap": {"amount": 100, "period": "day"},
            },
        ),
        (
            Badge,
            {
                "code": "b",
                "name": "x",
                "repeatable": True,
                "combine": "any",
                "criteria": [
                    {"criterion": {**CRITERION, "window": window}, "threshold": 3},
                    {
                        "criterion": {**CRITERION, "aggregate": "distinct", "property": "sku"},
                        "threshold": 5,
                    },
                ],
            },
        ),
        (
            Challenge,
            {
                "code": "c",
                "name": "x",
                "window": {"type": "rolling", "days": 7},
                "objectives": [{"code": "o", "criterion": CRITERION, "target": 1}],
                "reward": {"points": 10},
            },
        ),
        (
            Streak,
            {
                "code": "s",
                "name": "x",
                "trigger": TRIGGER,
                "timezone": "participant",
                "grace_hours": 2,
            },
        ),
        (
            Leaderboard,
            {
                "code": "l",
                "name": "x",
                "metric": "criterion",
                "period": "weekly",
                "criterion": {**CRITERION, "aggregate": "max", "property": "score"},
            },
        ),
        (
            Tier,
            {
                "code": "t",
                "name": "x",
                "levels": [
                    {"code": "a", "name": "A", "min_points": 0},
                    {"code": "b", "name": "B", "min_points": 100},
                ],
            },
        ),
    ]
    for schema, raw in cases:
        assert isinstance(parse_definition(schema, raw), schema)
