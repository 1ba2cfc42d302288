"""Groups: a board split by a participant attribute ranks each group apart; changing the
attribute moves the participant; attributes are validated with machine-readable codes."""

from __future__ import annotations

from typing import Any

from tests.conftest import Story


def _patch(story: Story, pid: str, body: dict[str, Any]) -> Any:
    return story.api.patch(f"/api/v1/gamify/participants/{pid}", headers=story.headers, json=body)


def _ranked(story: Story, group: str) -> list[tuple[str, int, int]]:
    board = story.get("/leaderboards/teams", group=group)
    assert board["group"] == group
    return [(e["participant_id"], e["rank"], e["score"]) for e in board["entries"]]


def test_group_boards_rank_within_the_group_and_a_new_group_moves_the_participant(
    story: Story,
) -> None:
    story.define(
        "points-rules",
        {
            "code": "pts",
            "name": "Points",
            "trigger": {"fact_type": "custom.earn"},
            "amount": {"property": "n"},
        },
    )
    story.define("leaderboards", {"code": "teams", "name": "Teams", "group_by": "team"})
    for pid, team in (("a", "red"), ("b", "red"), ("c", "blue")):
        assert _patch(story, pid, {"attributes": {"team": team}}).status_code == 200
    for pid, n in (("a", 10), ("b", 20), ("c", 5), ("d", 50)):
        story.send("earn", pid, {"n": n})
    assert _ranked(story, "red") == [("b", 1, 20), ("a", 2, 10)]
    assert _ranked(story, "blue") == [("c", 1, 5)]
    rank = story.get("/leaderboards/teams/rank/a", group="red")
    assert (rank["rank"], rank["total_participants"], rank["percentile"]) == (2, 2, 0.0)

    moved = _patch(story, "b", {"attributes": {"team": "blue", "level": 3}})
    assert moved.json()["attributes"] == {"team": "blue", "level": 3}
    assert _ranked(story, "red") == [("a", 1, 10)]
    assert _ranked(story, "blue") == [("b", 1, 20), ("c", 2, 5)]
    # A participant without the attribute joins a group when it is set.
    _patch(story, "d", {"attributes": {"team": "red"}})
    assert _ranked(story, "red") == [("d", 1, 50), ("a", 2, 10)]
    # A null removes the attribute, and the participant from every group.
    assert _patch(story, "d", {"attributes": {"team": None}}).json()["attributes"] == {}
    assert _ranked(story, "red") == [("a", 1, 10)]
    # Later points land in the participant's current group.
    story.send("earn", "b", {"n": 1})
    assert _ranked(story, "blue") == [("b", 1, 21), ("c", 2, 5)]

    no_group = story.api.get("/api/v1/gamify/leaderboards/teams", headers=story.headers)
    assert (no_group.status_code, no_group.json()["code"]) == (422, "group_required")


def test_attributes_are_validated_with_machine_readable_codes(story: Story) -> None:
    cases = [
        ({"bad name": 1}, "invalid_attribute_name"),
        ({"nested": {"a": 1}}, "invalid_attribute_type"),
        ({"list": [1]}, "invalid_attribute_type"),
        ({"long": "x" * 300}, "invalid_attribute_value"),
        ({"empty": ""}, "invalid_attribute_value"),
        ({f"a{i}": i for i in range(40)}, "too_many_attributes"),
    ]
    for attributes, code in cases:
        response = _patch(story, "p", {"attributes": attributes})
        assert response.status_code == 422, attributes
        body = response.json()
        assert body["code"] == "validation_failed"
        assert code in [e["code"] for e in body["errors"]], body
    ok = _patch(story, "p", {"attributes": {"team": "red", "vip": True, "age": 31.5}})
    assert ok.json()["attributes"] == {"team": "red", "vip": True, "age": 31.5}
