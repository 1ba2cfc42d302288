"""The preview's evaluation alone (pure): a challenge is reached only when every objective
is met within one same window, and only the first time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import Challenge
from bricqs.mechanics.preview import preview
from bricqs.schemas import Fact


def _fact(n: int, fact_type: str, day: int, **properties: Any) -> Fact:
    return Fact(
        fact_id=f"fact_{n:03d}",
        fact_type=fact_type,
        project_id="prj",
        environment="live",
        participant_id="p",
        event_id=f"evt_{n:03d}",
        properties=properties,
        occurred_at=datetime(2026, 3, day, 12, tzinfo=UTC),
    )


def test_a_challenge_is_reached_when_both_objectives_meet_within_one_window() -> None:
    challenge = parse_definition(
        Challenge,
        {
            "code": "busy-week",
            "name": "Busy week",
            "status": "paused",  # a draft's status does not stop its preview
            "window": {"type": "rolling", "days": 7},
            "objectives": [
                {"code": "buys", "criterion": {"fact_type": "custom.purchase"}, "target": 2},
                {"code": "logins", "criterion": {"fact_type": "custom.login"}, "target": 1},
            ],
        },
    )
    assert not isinstance(challenge, list), challenge
    facts = [
        _fact(1, "custom.purchase", 1),
        _fact(2, "custom.purchase", 7),  # 2 purchases in Mar 1-7, but no login yet
        _fact(3, "custom.login", 8),  # Mar 2-8 holds one purchase: not yet
        _fact(4, "custom.other", 10),
        _fact(5, "custom.purchase", 11),  # 2 purchases and the login in Mar 5-11
        _fact(6, "custom.purchase", 12),
    ]
    result = preview(challenge, list(reversed(facts)))
    assert [e.fact.fact_id for e in result.effects] == [
        "fact_001",
        "fact_002",
        "fact_003",
        "fact_005",
        "fact_006",
    ]  # the other fact is not looked at
    assert result.reached_by is not None and result.reached_by.fact_id == "fact_005"
    assert [e.reached for e in result.effects] == [False, False, False, True, False]
    # At the login, its windows (those that contain it) hold one purchase.
    assert result.effects[2].values == {"buys": 1.0, "logins": 1.0}
    assert result.effects[-1].values == {"buys": 3.0, "logins": 1.0}
    assert result.points == 0 and result.streak_periods == []
