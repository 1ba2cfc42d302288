"""The rewards catalogue through the api: definitions and code pools, the catalogue with
each reward's eligibility, claims (one transaction: points, inventory, claim, fact and
webhook), cancellation, scopes and tenancy. Races are in test_reward_claims_concurrency.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from bricqs.mechanics import rewards
from bricqs.mechanics.cache import RuleCache
from bricqs.storage.tenants import Tenant as TenantScope
from bricqs_devstack.servers import Server
from tests.conftest import Tenant, make_tenant
from tests.security.test_participant_tokens import bearer, mint
from tests.webhooks.conftest import open_api  # noqa: F401 - fixture

GAMIFY = "/api/v1/gamify"
ADMIN = f"{GAMIFY}/admin/rewards"


class Shop:
    """One tenant's rewards, through the api with its live key (or another)."""

    def __init__(self, api: TestClient[Any], key: str) -> None:
        self.api, self.headers = api, {"X-API-Key": key}

    def define(self, code: str, **fields: Any) -> dict[str, Any]:
        body = {"code": code, "name": code.title(), "cost": 10, "type": "coupon", **fields}
        answer = self.api.post(ADMIN, headers=self.headers, json=body)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def upload(self, code: str, codes: list[str]) -> Any:
        return self.api.post(f"{ADMIN}/{code}/codes", headers=self.headers, json={"codes": codes})

    def award(self, participant: str, amount: int) -> None:
        body = {"participant_id": participant, "amount": amount}
        answer = self.api.post(f"{GAMIFY}/points/award", headers=self.headers, json=body)
        assert answer.status_code == 200, answer.text

    def claim(self, code: str, participant: str, key: str | None = None, **headers: str) -> Any:
        body: dict[str, Any] = {"participant_id": participant}
        if key is not None:
            body["idempotency_key"] = key
        return self.api.post(
            f"{GAMIFY}/rewards/{code}/claim", headers={**self.headers, **headers}, json=body
        )

    def cancel(self, claim_id: str, **body: Any) -> Any:
        return self.api.post(
            f"{GAMIFY}/admin/claims/{claim_id}/cancel", headers=self.headers, json=body
        )

    def balance(self, participant: str) -> int:
        answer = self.api.get(f"{GAMIFY}/participants/{participant}/points", headers=self.headers)
        return int(answer.json()["balance"])

    def catalogue(self, participant: str | None = None) -> dict[str, Any]:
        params = {} if participant is None else {"participant_id": participant}
        answer = self.api.get(f"{GAMIFY}/rewards", headers=self.headers, params=params)
        assert answer.status_code == 200, answer.text
        return {item["code"]: item for item in answer.json()["items"]}

    def claims(self, participant: str) -> list[dict[str, Any]]:
        answer = self.api.get(f"{GAMIFY}/participants/{participant}/claims", headers=self.headers)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])


@pytest.fixture
def shop(api: TestClient[Any], tenant: Tenant) -> Shop:
    return Shop(api, tenant.live_key)


def rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(query, params).fetchall())


def test_a_claim_spends_the_cost_hands_out_the_oldest_code_and_records_claim_and_fact(
    shop: Shop, tenant: Tenant, postgres_server: Server
) -> None:
    shop.define("gift", cost=30, code_pool=True)
    uploaded = shop.upload("gift", ["B-2", "A-1", "A-1"])
    assert uploaded.json() == {
        "added": 2,
        "skipped": 1,
        "codes": {"available": 2, "claimed": 0, "void": 0},
    }
    shop.award("ann", 100)
    answer = shop.claim("gift", "ann")
    assert answer.status_code == 200, answer.text
    claim = answer.json()
    assert (claim["code"], claim["cost"], claim["balance"], claim["status"]) == (
        "A-1",
        30,
        70,
        "claimed",
    )
    assert claim["duplicate"] is False
    assert shop.balance("ann") == 70
    assert [c["claim_id"] for c in shop.claims("ann")] == [claim["claim_id"]]
    assert shop.catalogue("ann")["gift"]["remaining"] == 1
    url = postgres_server.url
    ledger = rows(
        url,
        "SELECT amount FROM points_ledger WHERE project_id = %s AND participant_id = 'ann'"
        " ORDER BY entry_id",
        tenant.project_id,
    )
    assert ledger == [(100,), (-30,)]
    facts = rows(
        url,
        "SELECT properties->>'reward', properties->>'code', event_id FROM facts"
        " WHERE project_id = %s AND fact_type = 'reward.claimed'",
        tenant.project_id,
    )
    assert facts == [("gift", "A-1", claim["claim_id"])]


def test_a_claim_without_the_balance_is_409_insufficient_balance_and_changes_nothing(
    shop: Shop, tenant: Tenant, postgres_server: Server
) -> None:
    shop.define("mug", cost=50, stock=3)
    shop.award("ann", 49)
    refused = shop.claim("mug", "ann")
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "insufficient_balance"
    assert refused.json()["balance"] == 49
    assert shop.balance("ann") == 49
    assert shop.catalogue("ann")["mug"]["remaining"] == 3
    assert shop.claims("ann") == []


def test_a_repeated_idempotency_key_answers_the_first_claim_with_one_deduction(
    shop: Shop, tenant: Tenant, postgres_server: Server
) -> None:
    shop.define("mug", cost=10, stock=5)
    shop.define("cap", cost=10)
    shop.award("ann", 100)
    first = shop.claim("mug", "ann", key="order-1")
    again = shop.claim("mug", "ann", key="order-1")
    by_header = shop.claim("mug", "ann", **{"Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == by_header.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}
    assert by_header.json()["claim_id"] == first.json()["claim_id"]
    assert shop.balance("ann") == 90
    assert len(shop.claims("ann")) == 1
    assert shop.catalogue()["mug"]["remaining"] == 4
    for reward, participant in (("cap", "ann"), ("mug", "bob")):
        other = shop.claim(reward, participant, key="order-1")
        assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict")
    bad = shop.claim("mug", "ann", **{"Idempotency-Key": "no spaces allowed"})
    assert (bad.status_code, bad.json()["code"]) == (422, "validation_failed")


def test_out_of_stock_is_409_and_the_catalogue_says_why(shop: Shop) -> None:
    shop.define("mug", cost=10, stock=1)
    shop.award("ann", 100)
    assert shop.claim("mug", "ann").status_code == 200
    refused = shop.claim("mug", "ann")
    assert (refused.status_code, refused.json()["code"]) == (409, "out_of_stock")
    assert shop.catalogue("ann")["mug"]["reasons"] == ["out_of_stock"]
    shop.define("pool", cost=10, code_pool=True)
    refused = shop.claim("pool", "ann")
    assert (refused.status_code, refused.json()["code"]) == (409, "out_of_stock")
    assert shop.balance("ann") == 90


def test_the_claim_limit_refuses_exactly_the_claim_past_it_and_a_cancel_frees_one(
    shop: Shop,
) -> None:
    shop.define("mug", cost=10, limit_per_participant=2)
    shop.award("ann", 100)
    first = shop.claim("mug", "ann").json()
    assert shop.claim("mug", "ann").status_code == 200
    assert shop.catalogue("ann")["mug"]["reasons"] == ["limit_reached"]
    refused = shop.claim("mug", "ann")
    assert (refused.status_code, refused.json()["code"]) == (409, "claim_limit_reached")
    assert shop.claim("mug", "bob").json()["code"] == "insufficient_balance"  # not the limit
    assert shop.cancel(first["claim_id"]).status_code == 200
    assert shop.claim("mug", "ann").status_code == 200
    assert shop.balance("ann") == 80  # 100 - 3 claims + 1 refund, of 10 each


def test_cancel_refunds_returns_the_code_once_and_voided_codes_are_never_handed_out(
    shop: Shop, tenant: Tenant, postgres_server: Server
) -> None:
    shop.define("gift", cost=30, code_pool=True)
    shop.upload("gift", ["A", "B"])
    shop.award("ann", 100)
    first = shop.claim("gift", "ann").json()
    cancelled = shop.cancel(first["claim_id"], reason="wrong size")
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["status"], body["code_action"], body["balance"]) == ("cancelled", "returned", 100)
    assert (body["cancel_reason"], body["duplicate"]) == ("wrong size", False)
    # A refund gives back what was spent: lifetime points (and so tiers) do not move.
    points = shop.api.get(f"{GAMIFY}/participants/ann/points", headers=shop.headers).json()
    assert (points["total_earned"], points["total_spent"]) == (100, 0)
    refunded = rows(
        postgres_server.url,
        "SELECT kind, amount FROM points_ledger WHERE project_id = %s AND kind = 'refund'",
        tenant.project_id,
    )
    assert refunded == [("refund", 30)]
    again = shop.cancel(first["claim_id"], code_action="void")
    assert again.status_code == 200
    assert again.json() == {**body, "duplicate": True}
    assert shop.balance("ann") == 100
    second = shop.claim("gift", "ann").json()
    assert second["code"] == "A"  # returned to the pool, handed out again
    voided = shop.cancel(second["claim_id"], code_action="void").json()
    assert voided["code_action"] == "voided"
    assert shop.claim("gift", "ann").json()["code"] == "B"
    assert shop.claim("gift", "ann").json()["code"] == "out_of_stock"  # "A" is void
    counts = shop.api.get(f"{ADMIN}/gift", headers=shop.headers).json()["codes"]
    assert counts == {"available": 0, "claimed": 1, "void": 1}
    assert shop.balance("ann") == 70
    facts = rows(
        postgres_server.url,
        "SELECT count(*) FROM facts WHERE project_id = %s AND fact_type = 'reward.cancelled'",
        tenant.project_id,
    )
    assert facts == [(2,)]


def test_cancelling_a_stock_claim_gives_its_unit_back(shop: Shop) -> None:
    shop.define("mug", cost=0, stock=1)
    first = shop.claim("mug", "ann").json()
    assert first["debit_entry_id"] is None  # free: nothing spent, nothing to refund
    assert shop.catalogue()["mug"]["remaining"] == 0
    assert shop.cancel(first["claim_id"]).json()["refund_entry_id"] is None
    assert shop.catalogue()["mug"]["remaining"] == 1
    assert shop.claim("mug", "bob").status_code == 200
    missing = shop.cancel("clm_" + "0" * 26)
    assert (missing.status_code, missing.json()["code"]) == (404, "claim_not_found")


def test_an_inactive_reward_is_409_reward_not_active_and_archived_is_404(shop: Shop) -> None:
    now = datetime.now(UTC)
    shop.define("soon", starts_at=(now + timedelta(days=1)).isoformat())
    shop.define("over", ends_at=(now - timedelta(seconds=1)).isoformat())
    shop.define("paused", status="paused")
    shop.define("gone")
    assert shop.api.delete(f"{ADMIN}/gone", headers=shop.headers).status_code == 200
    shop.award("ann", 100)
    for code in ("soon", "over", "paused"):
        refused = shop.claim(code, "ann")
        assert (refused.status_code, refused.json()["code"]) == (409, "reward_not_active")
    assert shop.claim("gone", "ann").json()["code"] == "reward_not_found"
    catalogue = shop.catalogue("ann")
    assert sorted(catalogue) == ["over", "paused", "soon"]
    assert {c["reasons"][0] for c in catalogue.values()} == {"not_active"}
    assert shop.balance("ann") == 100


def test_the_window_opens_at_starts_at_and_closes_at_ends_at(
    postgres_server: Server, tenant: Tenant, shop: Shop
) -> None:
    """The claim's clock is injected: exactly at each edge, and a microsecond before."""
    # Near now: facts are kept in weekly partitions made a few weeks ahead (docs/retention.md).
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    end = start + timedelta(days=1)
    shop.define("window", cost=0, starts_at=start.isoformat(), ends_at=end.isoformat())
    tiny = timedelta(microseconds=1)
    scope = TenantScope(tenant.project_id, "live")

    async def claim_at(at: datetime) -> str:
        async with await psycopg.AsyncConnection.connect(postgres_server.url) as conn:
            try:
                async with conn.transaction():
                    await rewards.claim_reward(
                        conn, scope, RuleCache(0), "ann", "window", idempotency_key=None, now=at
                    )
            except rewards.ClaimRefused as refused:
                return refused.reason
            return "claimed"

    outcomes = [asyncio.run(claim_at(at)) for at in (start - tiny, start, end - tiny, end)]
    assert outcomes == ["not_active", "claimed", "claimed", "not_active"]


def test_definitions_are_validated_with_field_errors(shop: Shop) -> None:
    base = {"code": "bad", "name": "Bad", "cost": 1, "type": "coupon"}
    cases = [
        ({"code_pool": True, "stock": 3}, "stock", "invalid_combination"),
        (
            {"starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"},
            "ends_at",
            "invalid_range",
        ),
        ({"starts_at": "2030-01-02T00:00:00"}, "starts_at", "invalid_format"),
    ]
    for fields, field, code in cases:
        answer = shop.api.post(ADMIN, headers=shop.headers, json={**base, **fields})
        assert answer.status_code == 422, answer.text
        assert [(e["field"], e["code"]) for e in answer.json()["errors"]] == [(field, code)]
    for fields in ({"type": "cash"}, {"cost": -1}, {"limit_per_participant": 0}):
        answer = shop.api.post(ADMIN, headers=shop.headers, json={**base, **fields})
        assert (answer.status_code, answer.json()["code"]) == (422, "validation_failed")
    shop.define("mug", stock=1)
    taken = shop.api.post(ADMIN, headers=shop.headers, json={**base, "code": "mug"})
    assert (taken.status_code, taken.json()["code"]) == (409, "reward_exists")
    no_pool = shop.upload("mug", ["X"])
    assert (no_pool.status_code, no_pool.json()["code"]) == (409, "not_a_code_pool")
    shop.define("pool", code_pool=True)
    too_many = shop.upload("pool", [f"C{i}" for i in range(1001)])
    assert too_many.status_code == 422
    switched = shop.api.put(
        f"{ADMIN}/pool", headers=shop.headers, json={**base, "code": "pool", "stock": 5}
    )
    assert [e["field"] for e in switched.json()["errors"]] == ["code_pool"]


def test_raising_the_stock_restocks_and_the_admin_sees_what_is_left(shop: Shop) -> None:
    shop.define("mug", cost=0, stock=1)
    shop.claim("mug", "ann")
    assert shop.claim("mug", "bob").json()["code"] == "out_of_stock"
    body = {"code": "mug", "name": "Mug", "cost": 0, "type": "physical", "stock": 3}
    updated = shop.api.put(f"{ADMIN}/mug", headers=shop.headers, json=body)
    assert updated.status_code == 200, updated.text
    assert (updated.json()["remaining"], updated.json()["version"]) == (2, 2)
    assert shop.claim("mug", "bob").status_code == 200
    listed = shop.api.get(ADMIN, headers=shop.headers).json()["items"]
    assert [(r["code"], r["type"], r["remaining"]) for r in listed] == [("mug", "physical", 1)]
    below = shop.api.put(f"{ADMIN}/mug", headers=shop.headers, json={**body, "stock": 1})
    assert (below.status_code, below.json()["code"]) == (409, "stock_below_claimed")
    assert shop.api.get(f"{ADMIN}/mug", headers=shop.headers).json()["stock"] == 3


def test_rewards_and_claims_stay_in_their_project_and_environment(
    api: TestClient[Any], tenant: Tenant, postgres_server: Server
) -> None:
    live = Shop(api, tenant.live_key)
    live.define("mug", cost=10, stock=5)
    live.award("ann", 100)
    claim = live.claim("mug", "ann").json()
    other = Shop(api, make_tenant(postgres_server.url, "other").live_key)
    test = Shop(api, tenant.test_key)
    for outsider in (other, test):
        assert outsider.catalogue("ann") == {}
        assert outsider.claims("ann") == []
        assert outsider.claim("mug", "ann").json()["code"] == "reward_not_found"
        assert outsider.cancel(claim["claim_id"]).json()["code"] == "claim_not_found"
        assert outsider.api.get(f"{ADMIN}/mug", headers=outsider.headers).status_code == 404
    # The same code in another project is another reward with its own stock.
    other.define("mug", cost=0, stock=1)
    assert other.claim("mug", "ann").status_code == 200
    assert live.catalogue()["mug"]["remaining"] == 4
    assert live.balance("ann") == 90


def test_a_participant_token_claims_and_lists_for_its_own_participant_only(
    api: TestClient[Any], tenant: Tenant
) -> None:
    shop = Shop(api, tenant.live_key)
    shop.define("mug", cost=10)
    shop.award("u1", 20)
    token = bearer(mint(api, tenant.live_key, "u1"))
    mine = api.post(f"{GAMIFY}/rewards/mug/claim", headers=token, json={"participant_id": "u1"})
    assert mine.status_code == 200, mine.text
    theirs = api.post(f"{GAMIFY}/rewards/mug/claim", headers=token, json={"participant_id": "u2"})
    assert (theirs.status_code, theirs.json()["code"]) == (403, "participant_mismatch")
    listed = api.get(f"{GAMIFY}/rewards", headers=token).json()
    assert (listed["participant_id"], listed["balance"]) == ("u1", 10)
    assert api.get(f"{GAMIFY}/participants/u2/claims", headers=token).status_code == 403
    assert api.post(ADMIN, headers=token, json={}).status_code == 403


def test_reward_webhooks_can_be_subscribed_and_are_owed_with_the_claim(
    open_api: TestClient[Any],  # noqa: F811
    tenant: Tenant,
    postgres_server: Server,
) -> None:
    shop = Shop(open_api, tenant.live_key)
    endpoint = shop.api.post(
        f"{GAMIFY}/admin/webhooks",
        headers=shop.headers,
        json={
            "url": "http://127.0.0.1:9/bricqs",
            "event_types": ["reward.claimed", "reward.cancelled"],
        },
    )
    assert endpoint.status_code == 201, endpoint.text
    shop.define("mug", cost=0)
    claim = shop.claim("mug", "ann").json()
    shop.cancel(claim["claim_id"])
    owed = rows(
        postgres_server.url,
        "SELECT fact_type FROM webhook_messages WHERE project_id = %s ORDER BY fact_id",
        tenant.project_id,
    )
    assert owed == [("reward.claimed",), ("reward.cancelled",)]


def test_a_participants_claims_are_exported_and_erased_with_them(shop: Shop) -> None:
    shop.define("mug", cost=0)
    claim = shop.claim("mug", "ann").json()
    exported = shop.api.get(f"{GAMIFY}/participants/ann/export", headers=shop.headers).json()
    assert [c["claim_id"] for c in exported["stored"]["reward_claims"]] == [claim["claim_id"]]
    erased = shop.api.delete(f"{GAMIFY}/participants/ann", headers=shop.headers)
    assert erased.status_code == 200, erased.text
    assert shop.claims("ann") == []


def test_an_erased_participants_pool_code_stays_claimed_and_names_no_one(
    shop: Shop, tenant: Tenant, postgres_server: Server
) -> None:
    shop.define("gift", cost=0, code_pool=True)
    shop.upload("gift", ["A", "B"])
    claim = shop.claim("gift", "ann").json()
    assert shop.api.delete(f"{GAMIFY}/participants/ann", headers=shop.headers).status_code == 200
    codes = rows(
        postgres_server.url,
        "SELECT to_jsonb(c)::text FROM reward_codes c WHERE project_id = %s ORDER BY code",
        tenant.project_id,
    )
    assert [c for (c,) in codes if "ann" in c or claim["claim_id"] in c] == []
    assert shop.claim("gift", "bob").json()["code"] == "B"  # "A" is still handed out


def test_a_cancel_gives_back_only_the_stock_its_claim_took(shop: Shop) -> None:
    shop.define("mug", cost=0)  # unlimited: its claims take no stock
    unlimited = shop.claim("mug", "ann").json()
    assert unlimited["stock_taken"] is False
    body = {"code": "mug", "name": "Mug", "cost": 0, "type": "physical", "stock": 1}
    assert shop.api.put(f"{ADMIN}/mug", headers=shop.headers, json=body).status_code == 200
    assert shop.claim("mug", "bob").json()["stock_taken"] is True
    assert shop.catalogue()["mug"]["remaining"] == 0
    shop.cancel(unlimited["claim_id"])
    assert shop.catalogue()["mug"]["remaining"] == 0
    assert shop.claim("mug", "cat").json()["code"] == "out_of_stock"


def test_refusals_name_every_reason_in_order_and_none_at_the_edges() -> None:
    """Pure: the judgment the catalogue and the claim share."""
    # Near now: facts are kept in weekly partitions made a few weeks ahead (docs/retention.md).
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    reward = rewards.RewardDefinition(
        code="r",
        name="R",
        cost=10,
        type="digital",
        stock=1,
        limit_per_participant=2,
        starts_at=start,
        ends_at=start + timedelta(days=1),
    )
    assert rewards.refusals(reward, 0, start - timedelta(seconds=1), 9, 2) == [
        "not_active",
        "out_of_stock",
        "limit_reached",
        "insufficient_balance",
    ]
    assert rewards.refusals(reward, 1, start, 10, 1) == []  # every edge just inside
    unlimited = rewards.RewardDefinition(code="u", name="U", cost=0, type="coupon")
    assert rewards.refusals(unlimited, None, start, 0, 10**6) == []
