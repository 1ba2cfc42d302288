"""Definition CRUD through the api: create, list, get, update, archive; errors by field."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from tests.conftest import Story, Tenant, make_tenant

RULE = {
    "code": "buy",
    "name": "Buy",
    "trigger": {"fact_type": "custom.purchase"},
    "amount": {"fixed": 10},
}
ADMIN = "/api/v1/gamify/admin"


def test_create_get_list_update_archive(story: Story) -> None:
    created = story.define("points-rules", RULE)
    assert (created["code"], created["version"], created["status"]) == ("buy", 1, "active")
    assert story.get("/admin/points-rules/buy")["amount"] == {
        "fixed": 10,
        "property": None,
        "multiplier": 1.0,
        "rounding": "floor",
    }
    story.send("purchase", "u")
    updated = story.api.put(
        f"{ADMIN}/points-rules/buy", headers=story.headers, json={**RULE, "amount": {"fixed": 20}}
    )
    assert updated.status_code == 200 and updated.json()["version"] == 2
    story.send("purchase", "u")  # the change applies without any restart
    archived = story.api.delete(f"{ADMIN}/points-rules/buy", headers=story.headers)
    assert archived.json()["status"] == "archived"
    story.send("purchase", "u")  # archived rules stop applying
    assert story.get("/participants/u/points")["balance"] == 30
    assert story.get("/admin/points-rules")["items"] == []
    assert [
        d["code"] for d in story.get("/admin/points-rules", include_archived=True)["items"]
    ] == ["buy"]


def test_duplicate_code_is_409_and_unknown_code_404(story: Story) -> None:
    story.define("points-rules", RULE)
    again = story.api.post(f"{ADMIN}/points-rules", headers=story.headers, json=RULE)
    assert (again.status_code, again.json()["code"]) == (409, "definition_exists")
    for method in ("get", "delete"):
        missing = story.api.request(method.upper(), f"{ADMIN}/badges/nope", headers=story.headers)
        assert (missing.status_code, missing.json()["code"]) == (404, "definition_not_found")
    renamed = story.api.put(
        f"{ADMIN}/points-rules/buy", headers=story.headers, json={**RULE, "code": "x"}
    )
    assert renamed.status_code == 422 and renamed.json()["errors"][0]["field"] == "code"


@pytest.mark.parametrize(
    ("segment", "body", "field"),
    [
        ("points-rules", {**RULE, "amount": {"fixed": 1, "property": "a"}}, "amount"),
        (
            "points-rules",
            {**RULE, "trigger": {"fact_type": "custom.x", "where": {"path": "a", "op": "??"}}},
            "trigger.where.op",
        ),
        ("points-rules", {**RULE, "name": 7}, "name"),
        (
            "badges",
            {
                "code": "b",
                "name": "B",
                "criteria": [
                    {"criterion": {"fact_type": "custom.x", "aggregate": "max"}, "threshold": 1}
                ],
            },
            "criteria[0].criterion.property",
        ),
        (
            "challenges",
            {
                "code": "c",
                "name": "C",
                "objectives": [{"code": "o", "criterion": {"fact_type": "custom.x"}, "target": 1}],
                "reward": {"badge": "ghost"},
            },
            "reward.badge",
        ),
        ("tiers", {"code": "t", "name": "T", "levels": []}, "levels"),
    ],
)
def test_invalid_definitions_are_refused_with_field_errors(
    story: Story, segment: str, body: dict[str, Any], field: str
) -> None:
    response = story.api.post(f"{ADMIN}/{segment}", headers=story.headers, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_failed"
    assert field in [e["field"] for e in response.json()["errors"]]


def test_a_key_sees_only_its_own_project_and_environment(
    api: TestClient[Any], story: Story, postgres_server: Any, tenant: Tenant
) -> None:
    story.define("points-rules", RULE)
    story.send("purchase", "shared-name")
    other = make_tenant(postgres_server.url, "other")
    for key in (tenant.test_key, other.live_key):
        headers = {"X-API-Key": key}
        assert api.get(f"{ADMIN}/points-rules", headers=headers).json()["items"] == []
        assert api.get(f"{ADMIN}/points-rules/buy", headers=headers).status_code == 404
        points = api.get("/api/v1/gamify/participants/shared-name/points", headers=headers).json()
        assert points["balance"] == 0
        assert api.get("/api/v1/events/catalog", headers=headers).json()["items"] == []
    assert api.get("/api/v1/events/catalog").status_code == 401


def test_manual_points_and_badges(story: Story) -> None:
    story.define(
        "badges",
        {
            "code": "hero",
            "name": "Hero",
            "criteria": [{"criterion": {"fact_type": "custom.x"}, "threshold": 9}],
        },
    )
    url = "/api/v1/gamify/points"
    award = story.api.post(
        f"{url}/award",
        headers={**story.headers, "Idempotency-Key": "gift-1"},
        json={"participant_id": "m", "amount": 40, "reason": "welcome"},
    )
    again = story.api.post(
        f"{url}/award",
        headers={**story.headers, "Idempotency-Key": "gift-1"},
        json={"participant_id": "m", "amount": 40, "reason": "welcome"},
    )
    assert award.json()["balance"] == 40
    assert (again.json()["duplicate"], again.json()["entry_id"]) == (True, award.json()["entry_id"])
    too_much = story.api.post(
        f"{url}/deduct", headers=story.headers, json={"participant_id": "m", "amount": 41}
    )
    assert (too_much.status_code, too_much.json()["code"], too_much.json()["balance"]) == (
        409,
        "insufficient_balance",
        40,
    )
    spent = story.api.post(
        f"{url}/deduct", headers=story.headers, json={"participant_id": "m", "amount": 15}
    )
    assert spent.json()["balance"] == 25
    assert story.get("/participants/m/points") == {
        "participant_id": "m",
        "balance": 25,
        "total_earned": 40,
        "total_spent": 15,
        "total_expired": 0,
        "next_expiry": None,
    }
    badge = "/api/v1/gamify/badges/award"
    first = story.api.post(
        badge, headers=story.headers, json={"participant_id": "m", "badge_code": "hero"}
    )
    second = story.api.post(
        badge, headers=story.headers, json={"participant_id": "m", "badge_code": "hero"}
    )
    assert (first.json()["awarded"], second.json()["awarded"]) == (True, False)
    unknown = story.api.post(
        badge, headers=story.headers, json={"participant_id": "m", "badge_code": "zzz"}
    )
    assert unknown.status_code == 404
    negative = story.api.post(
        f"{url}/award", headers=story.headers, json={"participant_id": "m", "amount": -5}
    )
    assert negative.status_code == 422


def test_transactions_and_facts_are_cursor_paginated(story: Story) -> None:
    story.define("points-rules", RULE)
    for _ in range(5):
        story.send("purchase", "pager")
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = story.get(
            "/participants/pager/points/transactions",
            limit=2,
            **({"cursor": cursor} if cursor else {}),
        )
        seen += [e["entry_id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    facts = story.get("/participants/pager/facts", fact_type="custom.purchase", limit=3)
    assert len(facts["items"]) == 3 and facts["next_cursor"] is not None


def test_openapi_document_describes_the_api(api: TestClient[Any]) -> None:
    document = api.get("/schema/openapi.json").json()
    paths = document["paths"]
    assert "/api/v1/gamify/admin/badges" in paths
    assert "/api/v1/gamify/leaderboards/{code}/rank/{participant_id}" in paths
    assert "Badge" in document["components"]["schemas"]
