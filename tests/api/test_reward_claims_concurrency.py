"""Claims racing each other through the api (threads released together on a barrier,
the api's pool of PostgreSQL connections shared by them): the last units of a stock, the
last codes of a pool, one participant's balance, limit and idempotency key. Whatever the
interleaving, the stored rows add up: nothing oversold, nothing overspent, nothing twice.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from bricqs_devstack.servers import Server
from tests.api.test_rewards import Shop
from tests.conftest import Tenant

CLIENTS = 30


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call at once, each in its own thread, released together."""
    start = threading.Barrier(len(calls))

    def released(call: Callable[[], Any]) -> Any:
        start.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(released, call) for call in calls]
        return [f.result(timeout=120) for f in futures]


def outcomes(answers: list[Any]) -> Counter[str]:
    return Counter("claimed" if a.status_code == 200 else a.json()["code"] for a in answers)


def stored(url: str, project_id: str) -> dict[str, Any]:
    """What PostgreSQL holds for the project: claims, codes, balances and ledger sums."""
    with psycopg.connect(url) as conn:

        def one(query: str) -> Any:
            row = conn.execute(query, (project_id,)).fetchone()
            return row[0] if row else None

        return {
            "claims": one("SELECT count(*) FROM reward_claims WHERE project_id = %s"),
            "counted": one("SELECT sum(claimed) FROM rewards WHERE project_id = %s"),
            "codes_claimed": one(
                "SELECT count(*) FROM reward_codes WHERE project_id = %s AND status = 'claimed'"
            ),
            "distinct_codes": one(
                "SELECT count(DISTINCT code) FROM reward_claims WHERE project_id = %s"
            ),
            "balances": one("SELECT sum(balance) FROM points_balances WHERE project_id = %s"),
            "ledger": one("SELECT sum(amount) FROM points_ledger WHERE project_id = %s"),
            "negative": one(
                "SELECT count(*) FROM points_balances WHERE project_id = %s AND balance < 0"
            ),
        }


@pytest.mark.parametrize("inventory", ["stock", "pool"])
def test_concurrent_claims_for_the_last_units_succeed_exactly_as_many_times_as_units(
    api: TestClient[Any], tenant: Tenant, postgres_server: Server, inventory: str
) -> None:
    shop = Shop(api, tenant.live_key)
    units = 5
    if inventory == "stock":
        shop.define("prize", cost=10, stock=units)
    else:
        shop.define("prize", cost=10, code_pool=True)
        shop.upload("prize", [f"CODE-{i}" for i in range(units)])
    participants = [f"p{i}" for i in range(CLIENTS)]
    for participant in participants:
        shop.award(participant, 10)
    answers = race([lambda p=p: shop.claim("prize", p) for p in participants])  # type: ignore[misc]
    assert outcomes(answers) == {"claimed": units, "out_of_stock": CLIENTS - units}
    rows = stored(postgres_server.url, tenant.project_id)
    assert rows["claims"] == units
    if inventory == "stock":
        assert rows["counted"] == units
    else:
        assert rows["codes_claimed"] == rows["distinct_codes"] == units
    assert rows["balances"] == rows["ledger"] == (CLIENTS - units) * 10
    winners = {a.json()["participant_id"] for a in answers if a.status_code == 200}
    for participant in participants:
        assert shop.balance(participant) == (0 if participant in winners else 10)


def test_concurrent_claims_of_one_participant_never_spend_more_than_the_balance(
    api: TestClient[Any], tenant: Tenant, postgres_server: Server
) -> None:
    shop = Shop(api, tenant.live_key)
    shop.define("coffee", cost=10)
    shop.award("ann", 35)
    answers = race([lambda: shop.claim("coffee", "ann") for _ in range(CLIENTS)])
    assert outcomes(answers) == {"claimed": 3, "insufficient_balance": CLIENTS - 3}
    rows = stored(postgres_server.url, tenant.project_id)
    assert (rows["claims"], rows["balances"], rows["ledger"], rows["negative"]) == (3, 5, 5, 0)


def test_concurrent_claims_of_one_participant_stop_at_the_claim_limit(
    api: TestClient[Any], tenant: Tenant, postgres_server: Server
) -> None:
    shop = Shop(api, tenant.live_key)
    shop.define("coffee", cost=1, limit_per_participant=2)
    shop.award("ann", 1000)
    answers = race([lambda: shop.claim("coffee", "ann") for _ in range(CLIENTS)])
    assert outcomes(answers) == {"claimed": 2, "claim_limit_reached": CLIENTS - 2}
    assert shop.balance("ann") == 998


def test_concurrent_claims_with_one_idempotency_key_make_one_claim_and_one_deduction(
    api: TestClient[Any], tenant: Tenant, postgres_server: Server
) -> None:
    shop = Shop(api, tenant.live_key)
    shop.define("coffee", cost=10)
    shop.award("ann", 100)
    answers = race([lambda: shop.claim("coffee", "ann", key="tap-1") for _ in range(CLIENTS)])
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["claim_id"] for a in answers}) == 1
    assert sum(not a.json()["duplicate"] for a in answers) == 1
    rows = stored(postgres_server.url, tenant.project_id)
    assert (rows["claims"], rows["balances"], rows["ledger"]) == (1, 90, 90)


def test_concurrent_cancels_of_one_claim_refund_it_once(
    api: TestClient[Any], tenant: Tenant, postgres_server: Server
) -> None:
    shop = Shop(api, tenant.live_key)
    shop.define("mug", cost=10, stock=1)
    shop.award("ann", 10)
    claim = shop.claim("mug", "ann").json()
    answers = race([lambda: shop.cancel(claim["claim_id"]) for _ in range(CLIENTS)])
    assert {a.status_code for a in answers} == {200}
    assert sum(not a.json()["duplicate"] for a in answers) == 1
    rows = stored(postgres_server.url, tenant.project_id)
    assert (rows["balances"], rows["ledger"], rows["counted"]) == (10, 10, 0)
