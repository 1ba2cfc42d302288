"""The economy told through HTTP with numbers: points earned with and without a boost,
some of them expiring, a reward claim that spends the soonest-expiring points first, then
the scheduler writing off what is left of them at their expiry instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bricqs_devstack.servers import Server
from tests.conftest import Story
from tests.mechanics.test_points_expiry import write_off_everything_due
from tests.processor.schedule_helpers import rounds


def at(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def earned(answer: dict[str, Any]) -> list[tuple[int, list[dict[str, Any]] | None]]:
    return [(p["amount"], p.get("boosts")) for p in answer["effects"].get("points", [])]


def test_boosted_and_expiring_points_a_claim_and_the_expiry_add_up(
    story: Story, postgres_server: Server
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    day = timedelta(days=1)
    story.define(
        "points-rules",
        {
            "code": "order",
            "name": "Order",
            "trigger": {"fact_type": "custom.order"},
            "amount": {"fixed": 10},
            "expires_after_days": 1,
        },
    )
    story.define(
        "points-rules",
        {
            "code": "review",
            "name": "Review",
            "trigger": {"fact_type": "custom.review"},
            "amount": {"fixed": 5},
        },
    )
    # Double points on orders from t0 + 1 h: the first order is before it.
    story.define(
        "boosts",
        {
            "code": "double",
            "name": "Double",
            "multiplier": 2,
            "starts_at": at(t0 + timedelta(hours=1)),
            "ends_at": at(t0 + timedelta(hours=6)),
            "rules": ["order"],
        },
    )
    reward = {"code": "mug", "name": "Mug", "cost": 15, "type": "physical", "stock": 1}
    created = story.api.post("/api/v1/gamify/admin/rewards", headers=story.headers, json=reward)
    assert created.status_code == 201, created.text

    double = [{"code": "double", "multiplier": 2.0}]
    assert earned(story.send("order", "ann", timestamp=at(t0))) == [(10, None)]
    assert earned(story.send("order", "ann", timestamp=at(t0 + timedelta(hours=2)))) == [
        (20, double)
    ]
    review = story.send("review", "ann", timestamp=at(t0 + timedelta(hours=2, minutes=1)))
    assert earned(review) == [(5, None)]  # the boost is on orders only
    balance = story.get("/participants/ann/points")
    assert (balance["balance"], balance["total_earned"]) == (35, 35)
    assert balance["next_expiry"] == {"at": at(t0 + day), "amount": 10}

    # The claim spends the soonest-expiring lot (10, expiring t0 + 1 d), then 5 of the
    # boosted one (20, expiring t0 + 2 h + 1 d); a second claim finds no stock.
    claim = story.api.post(
        "/api/v1/gamify/rewards/mug/claim", headers=story.headers, json={"participant_id": "ann"}
    )
    assert claim.status_code == 200, claim.text
    sold_out = story.api.post(
        "/api/v1/gamify/rewards/mug/claim", headers=story.headers, json={"participant_id": "ann"}
    )
    assert (sold_out.status_code, sold_out.json()["code"]) == (409, "out_of_stock")
    balance = story.get("/participants/ann/points")
    assert balance["balance"] == 20
    assert balance["next_expiry"] == {"at": at(t0 + timedelta(hours=2) + day), "amount": 15}

    # The scheduler at each lot's expiry: the first lot was spent whole (nothing to write
    # off); the boosted lot's 15 left go, once, whatever the number of rounds.
    write_off_everything_due(postgres_server.url, t0 + day)
    rounds(postgres_server.url, t0 + day, replicas=2)
    assert story.get("/participants/ann/points")["balance"] == 20
    for _ in range(2):
        rounds(postgres_server.url, t0 + timedelta(hours=2) + day, replicas=2)
    balance = story.get("/participants/ann/points")
    assert {k: balance[k] for k in ("balance", "total_earned", "total_spent")} == {
        "balance": 5,
        "total_earned": 35,
        "total_spent": 15,
    }
    assert (balance["total_expired"], balance["next_expiry"]) == (15, None)
    entries = story.get("/participants/ann/points/transactions")["items"]
    assert sorted(e["amount"] for e in entries) == sorted([10, 20, 5, -15, -15])
