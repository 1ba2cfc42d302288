"""Points expiry: lots spent soonest-expiring first, written off exactly once at their
expiry instant (a lot expiring at T is spendable at T - 1 µs and gone at T), with a
`points.expired` entry and fact that rules and webhooks see; lifetime totals, tiers and
points boards stay as they were."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
import psycopg
import pytest

from bricqs.ids import new_event_id
from bricqs.mechanics import state
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS
from bricqs.mechanics.expiry import expire_due_points
from bricqs.mechanics.manual import InsufficientBalance, PointsChange, change_points
from bricqs.schemas import Envelope
from bricqs.storage.definitions import create_definition
from bricqs.storage.ledger import LedgerEntry, write_ledger
from bricqs.storage.lots import lock_due_lots
from bricqs.storage.rankings import points_ranking
from bricqs.storage.tenants import Conn
from bricqs.storage.tenants import Tenant as Mechanics
from bricqs.storage.webhooks import create_endpoint
from bricqs.webhook_secrets import SecretBox
from bricqs_devstack.servers import Server
from tests.conftest import Story, make_tenant
from tests.mechanics.test_exactly_once import run
from tests.processor.schedule_helpers import rounds

T0 = datetime(2026, 3, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
T = TypeVar("T")


def at(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def tenant_of(story: Story) -> Mechanics:
    return Mechanics(story.tenant.project_id, "live")


def rule(code: str, event: str, points: int, days: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "name": code,
        "trigger": {"fact_type": f"custom.{event}"},
        "amount": {"fixed": points},
    }
    if days is not None:
        body["expires_after_days"] = days
    return body


def in_transaction(url: str, work: Callable[[Conn], Awaitable[T]]) -> T:
    async def go() -> T:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            return await work(conn)

    return asyncio.run(go())


def spend(url: str, tenant: Mechanics, pid: str, amount: int, now: datetime) -> PointsChange:
    rules = RuleCache(refresh_seconds=0)
    return in_transaction(
        url,
        lambda conn: change_points(
            conn, tenant, rules, pid, -amount, reason="shop", idempotency_key=None, now=now
        ),
    )


def expire(url: str, now: datetime, limit: int = 1_000) -> int:
    rules = RuleCache(refresh_seconds=0)
    return in_transaction(url, lambda conn: expire_due_points(conn, rules, now, limit))


def write_off_everything_due(url: str, now: datetime) -> None:
    """The chore runs across tenants: lots other tests left due are written off first, so
    what a test counts next is its own."""
    while expire(url, now) == 1_000:
        pass


def points(url: str, tenant: Mechanics, pid: str, now: datetime) -> dict[str, Any]:
    return in_transaction(url, lambda conn: state.points_state(conn, tenant, pid, now))


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]  # type: ignore[call-overload]


def lots_of(url: str, tenant: Mechanics, pid: str) -> list[tuple[int, int, datetime]]:
    """(amount, remaining, expires_at) of a participant's lots, soonest expiry first."""
    return [
        (int(a), int(r), e)
        for a, r, e in rows(
            url,
            "SELECT amount, remaining, expires_at FROM points_lots WHERE project_id = %s"
            " AND environment = %s AND participant_id = %s ORDER BY expires_at, earned_at",
            tenant.project_id,
            tenant.environment,
            pid,
        )
    ]


def expiry_entries(url: str, tenant: Mechanics) -> list[tuple[str, int]]:
    return [
        (p, int(a))
        for p, a in rows(
            url,
            "SELECT participant_id, amount FROM points_ledger WHERE project_id = %s"
            " AND environment = %s AND kind = 'expire' ORDER BY participant_id, amount",
            tenant.project_id,
            tenant.environment,
        )
    ]


def test_a_lot_is_spendable_until_its_expiry_instant_and_gone_at_it(
    story: Story, postgres_server: Server
) -> None:
    url, tenant = postgres_server.url, tenant_of(story)
    story.define("points-rules", rule("visit", "visit", 10, days=30))
    expires = T0 + timedelta(days=30)
    write_off_everything_due(url, expires)
    for pid in ("before", "at"):
        effects = story.send("visit", pid, timestamp=at(T0))["effects"]
        assert effects["points"][0]["expires_at"] == expires.isoformat()

    assert points(url, tenant, "at", expires - US)["balance"] == 10
    assert points(url, tenant, "at", expires - US)["next_expiry"] == {"at": expires, "amount": 10}
    assert spend(url, tenant, "before", 10, expires - US).balance == 0
    shown = points(url, tenant, "at", expires)
    assert (shown["balance"], shown["next_expiry"], shown["total_earned"]) == (0, None, 10)
    with pytest.raises(InsufficientBalance) as refused:
        spend(url, tenant, "at", 1, expires)
    assert refused.value.balance == 0

    assert expire(url, expires - US) == 0
    assert expire(url, expires) == 1  # "before" spent its lot: nothing of it to expire
    assert expiry_entries(url, tenant) == [("at", -10)]
    assert lots_of(url, tenant, "at") == [(10, 0, expires)]
    stored = rows(
        url,
        "SELECT balance, total_earned, total_spent, total_expired FROM points_balances"
        " WHERE project_id = %s AND participant_id = 'at'",
        tenant.project_id,
    )
    assert stored == [(0, 10, 0, 10)]
    assert points(url, tenant, "at", expires)["total_expired"] == 10


def test_a_spend_draws_on_the_soonest_expiring_lots_then_on_points_that_never_expire(
    story: Story, postgres_server: Server
) -> None:
    url, tenant = postgres_server.url, tenant_of(story)
    story.define("points-rules", rule("signup", "signup", 100))
    story.define("points-rules", rule("order", "order", 50, days=60))
    story.define("points-rules", rule("review", "review", 30, days=10))
    story.send("signup", "p1", timestamp=at(T0))
    story.send("order", "p1", timestamp=at(T0))
    story.send("review", "p1", timestamp=at(T0 + timedelta(days=1)))
    short, long = T0 + timedelta(days=11), T0 + timedelta(days=60)
    assert lots_of(url, tenant, "p1") == [(30, 30, short), (50, 50, long)]
    assert points(url, tenant, "p1", T0 + timedelta(days=2))["next_expiry"] == {
        "at": short,
        "amount": 30,
    }

    # 40: the review's 30 (expiring first, though earned last), then 10 of the order's.
    assert spend(url, tenant, "p1", 40, T0 + timedelta(days=2)).balance == 140
    assert lots_of(url, tenant, "p1") == [(30, 0, short), (50, 40, long)]
    # 60: the order's last 40, then 20 of the points that never expire.
    assert spend(url, tenant, "p1", 60, T0 + timedelta(days=3)).balance == 80
    assert lots_of(url, tenant, "p1") == [(30, 0, short), (50, 0, long)]
    assert points(url, tenant, "p1", T0 + timedelta(days=3))["next_expiry"] is None

    write_off_everything_due(url, long)
    assert expiry_entries(url, tenant) == []
    assert points(url, tenant, "p1", long)["balance"] == 80


def test_after_a_partial_spend_only_the_remainder_expires_and_lifetime_and_tier_stay(
    story: Story, postgres_server: Server
) -> None:
    url, tenant = postgres_server.url, tenant_of(story)
    story.define("points-rules", rule("order", "order", 50, days=60))
    story.define(
        "tiers",
        {
            "code": "status",
            "name": "Status",
            "levels": [
                {"code": "base", "name": "Base", "min_points": 0},
                {"code": "gold", "name": "Gold", "min_points": 40},
            ],
        },
    )
    story.define("leaderboards", {"code": "earners", "name": "Earners"})
    expires = T0 + timedelta(days=60)
    write_off_everything_due(url, expires)
    effects = story.send("order", "p2", timestamp=at(T0))["effects"]
    assert effects["tiers"][0]["to"] == "gold"
    spend(url, tenant, "p2", 20, T0 + timedelta(days=1))

    assert expire(url, expires) == 1
    assert expiry_entries(url, tenant) == [("p2", -30)]
    shown = points(url, tenant, "p2", expires)
    assert (shown["balance"], shown["total_earned"], shown["total_spent"]) == (0, 50, 20)
    assert shown["total_expired"] == 30
    tier = story.get("/participants/p2/tier")["items"][0]
    assert (tier["level"], tier["lifetime_points"]) == ("gold", 50)
    types = [
        t
        for (t,) in rows(
            url, "SELECT fact_type FROM facts WHERE project_id = %s", tenant.project_id
        )
    ]
    assert types.count("tier.changed") == 1 and types.count("points.expired") == 1
    # A points board ranks points earned: expiry takes nothing from it.
    ranking = in_transaction(url, lambda conn: points_ranking(conn, tenant, None, None))
    assert [(p, s) for p, s, _ in ranking] == [("p2", 50)]
    board = story.get("/leaderboards/earners")
    assert [(e["participant_id"], e["score"]) for e in board["entries"]] == [("p2", 50)]


def test_two_callers_share_the_due_lots_and_a_rerun_expires_nothing_twice(
    story: Story, postgres_server: Server
) -> None:
    url, tenant = postgres_server.url, tenant_of(story)
    story.define("points-rules", rule("order", "order", 10, days=5))
    now = T0 + timedelta(days=30)
    write_off_everything_due(url, now)
    for day, pid in enumerate(("a", "b", "c")):
        story.send("order", pid, timestamp=at(T0 + timedelta(days=day)))
    rules = RuleCache(refresh_seconds=0)

    async def race() -> tuple[int, int]:
        async with (
            await psycopg.AsyncConnection.connect(url) as first,
            await psycopg.AsyncConnection.connect(url) as second,
            first.transaction(),
        ):
            # The first caller holds the soonest lot; the second, meanwhile, skips it (it
            # would wait for it, or take it too, without SKIP LOCKED).
            took_first = await expire_due_points(first, rules, now, 1)
            async with second.transaction():
                took_second = await asyncio.wait_for(
                    expire_due_points(second, rules, now, 10), timeout=10
                )
        return took_first, took_second

    assert asyncio.run(race()) == (1, 2)
    assert expire(url, now) == 0
    assert expiry_entries(url, tenant) == [("a", -10), ("b", -10), ("c", -10)]

    # Were a written-off lot to say it holds points again, its expiry entry (named after
    # the lot) is already there: the lot is emptied, the balance left alone.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE points_lots SET remaining = amount"
            " WHERE project_id = %s AND participant_id = 'a'",
            (tenant.project_id,),
        )
    assert expire(url, now) == 1
    assert expire(url, now) == 0
    assert expiry_entries(url, tenant) == [("a", -10), ("b", -10), ("c", -10)]
    assert points(url, tenant, "a", now)["balance"] == 0


def test_a_points_expired_fact_drives_a_rule_and_owes_a_webhook(
    story: Story, postgres_server: Server
) -> None:
    url, tenant = postgres_server.url, tenant_of(story)
    story.define("points-rules", rule("order", "order", 10, days=5))
    story.define(
        "points-rules",
        {
            "code": "consolation",
            "name": "Consolation",
            "trigger": {"fact_type": "points.expired"},
            "amount": {"fixed": 1},
        },
    )

    async def subscribe(conn: Conn) -> None:
        await create_endpoint(
            conn,
            tenant,
            url="https://hooks.example/expired",
            event_types=["points.expired"],
            description="crm",
            enabled=True,
            box=SecretBox(""),
        )

    in_transaction(url, subscribe)
    expires = T0 + timedelta(days=5)
    write_off_everything_due(url, expires - US)
    story.send("order", "p3", timestamp=at(T0))
    assert expire(url, expires) == 1

    ledger = story.get("/participants/p3/points/transactions")["items"]
    assert sorted((e["kind"], e["amount"], e["source"]) for e in ledger) == [
        ("earn", 1, "rule:consolation"),
        ("earn", 10, "rule:order"),
        ("expire", -10, "expiry"),
    ]
    expired = story.get("/participants/p3/facts", fact_type="points.expired")["items"]
    assert [(f["properties"]["amount"], f["occurred_at"]) for f in expired] == [(10, at(expires))]
    owed = rows(
        url,
        "SELECT fact_type FROM webhook_messages WHERE project_id = %s",
        tenant.project_id,
    )
    assert owed == [("points.expired",)]
    assert points(url, tenant, "p3", expires)["balance"] == 1


def test_the_state_read_shows_the_next_expiry(story: Story) -> None:
    story.define("points-rules", rule("order", "order", 10, days=30))
    story.define("points-rules", rule("visit", "visit", 4, days=40))
    story.define("points-rules", rule("signup", "signup", 7))
    day = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    story.send("signup", "p4", timestamp=at(day))
    assert story.get("/participants/p4/state")["points"]["next_expiry"] is None
    story.send("order", "p4", timestamp=at(day))
    story.send("visit", "p4", timestamp=at(day - timedelta(days=10)))  # same instant
    story.send("order", "p4", timestamp=at(day + timedelta(hours=1)))
    shown = story.get("/participants/p4/state")["points"]
    assert shown["next_expiry"] == {"at": at(day + timedelta(days=30)), "amount": 14}
    assert shown["balance"] == 31
    assert story.get("/participants/p4/points")["next_expiry"] == shown["next_expiry"]


def _expiring_tenant(url: str) -> Mechanics:
    tenant = Mechanics(make_tenant(url).project_id, "live")

    async def define(conn: Conn) -> None:
        for raw in (rule("order", "order", 10, days=3), rule("visit", "visit", 1)):
            definition = parse_definition(KINDS["points-rules"][1], raw)
            assert not isinstance(definition, list)
            body = msgspec.json.encode(definition).decode()
            await create_definition(conn, tenant, "points_rule", raw["code"], "active", body)

    in_transaction(url, define)
    return tenant


def _outcome(url: str, tenant: Mechanics) -> dict[str, list[tuple[Any, ...]]]:
    queries = {
        "balances": "SELECT participant_id, balance, total_earned, total_spent, total_expired"
        " FROM points_balances WHERE project_id = %s AND environment = %s ORDER BY 1",
        "lots": "SELECT participant_id, lot_id, amount, remaining, earned_at, expires_at"
        " FROM points_lots WHERE project_id = %s AND environment = %s ORDER BY 1, 2",
        "ledger": "SELECT participant_id, entry_id, amount, kind, occurred_at"
        " FROM points_ledger WHERE project_id = %s AND environment = %s ORDER BY 1, 2",
        "expired": "SELECT fact_id, properties->'amount' FROM facts WHERE project_id = %s"
        " AND environment = %s AND fact_type = 'points.expired' ORDER BY 1",
    }
    return {
        name: rows(url, sql, tenant.project_id, tenant.environment) for name, sql in queries.items()
    }


def test_redelivering_and_replaying_the_earning_events_changes_nothing(
    postgres_server: Server,
) -> None:
    url = postgres_server.url
    tenant = _expiring_tenant(url)
    rng = random.Random(5)
    envelopes = []
    for _ in range(60):
        moment = T0 + timedelta(hours=rng.randrange(0, 24 * 10))
        envelopes.append(
            Envelope(
                event_id=new_event_id(),
                project_id=tenant.project_id,
                environment="live",
                event_name=rng.choice(["order", "visit"]),
                participant_id=rng.choice(["ann", "bob"]),
                properties={},
                occurred_at=moment,
                received_at=moment,
            )
        )
    run(url, [envelopes[i : i + 7] for i in range(0, len(envelopes), 7)])
    spend(url, tenant, "ann", 25, T0 + timedelta(days=4))
    write_off_everything_due(url, T0 + timedelta(days=8))
    first = _outcome(url, tenant)
    assert first["expired"] and first["lots"]

    again = list(envelopes)
    rng.shuffle(again)
    run(url, [again[i : i + 11] for i in range(0, len(again), 11)])
    write_off_everything_due(url, T0 + timedelta(days=8))
    assert _outcome(url, tenant) == first


def test_the_processors_scheduler_writes_off_what_is_due_once(
    story: Story, postgres_server: Server
) -> None:
    url, tenant = postgres_server.url, tenant_of(story)
    story.define("points-rules", rule("order", "order", 10, days=5))
    expires = T0 + timedelta(days=5)
    write_off_everything_due(url, expires)
    story.send("order", "p5", timestamp=at(T0))
    # Two scheduler replicas at once, with every kind of due work, as the processors run it.
    rounds(url, expires - US, replicas=2)
    assert expiry_entries(url, tenant) == []
    for _ in range(2):
        rounds(url, expires, replicas=2)
    assert expiry_entries(url, tenant) == [("p5", -10)]


def test_a_credit_becomes_one_lot_however_often_it_is_written(
    story: Story, postgres_server: Server
) -> None:
    url, tenant = postgres_server.url, tenant_of(story)

    def credit(entry_id: str) -> list[str]:
        entry = LedgerEntry(
            entry_id=entry_id,
            participant_id="p6",
            amount=10,
            kind="earn",
            source="rule:order",
            fact_id="fact_once",
            cap_bucket=None,
            occurred_at=T0,
            expires_at=T0 + timedelta(days=5),
        )
        return in_transaction(url, lambda conn: write_ledger(conn, tenant, [entry]))

    # The same rule and fact, written again under another entry id (a second run of the
    # mechanics for one fact): the ledger keeps the first entry, and so do the lots.
    assert credit("pts_first") == ["pts_first"]
    assert credit("pts_second") == []
    assert [
        lot_id
        for (lot_id,) in rows(
            url, "SELECT lot_id FROM points_lots WHERE project_id = %s", tenant.project_id
        )
    ] == ["pts_first"]


def test_a_spend_skips_a_lot_the_expiry_chore_holds_instead_of_waiting_for_it(
    story: Story, postgres_server: Server
) -> None:
    url, tenant = postgres_server.url, tenant_of(story)
    story.define("points-rules", rule("signup", "signup", 100))
    story.define("points-rules", rule("order", "order", 10, days=5))
    expires = T0 + timedelta(days=5)
    write_off_everything_due(url, expires)
    story.send("signup", "rich", timestamp=at(T0))
    for pid in ("rich", "poor"):
        story.send("order", pid, timestamp=at(T0))
    rules = RuleCache(refresh_seconds=0)
    # The spender's clock is an hour behind the chore's: to it the lots are not due yet.
    spender_now = expires - timedelta(hours=1)

    async def pay(conn: Conn, pid: str, amount: int) -> str:
        try:
            async with conn.transaction():
                change = await asyncio.wait_for(
                    change_points(
                        conn,
                        tenant,
                        rules,
                        pid,
                        -amount,
                        reason="shop",
                        idempotency_key=None,
                        now=spender_now,
                    ),
                    timeout=10,
                )
        except InsufficientBalance as refused:
            return f"refused at {refused.balance}"
        return f"paid, {change.balance} left"

    async def scenario() -> list[str]:
        async with (
            await psycopg.AsyncConnection.connect(url) as chore,
            await psycopg.AsyncConnection.connect(url) as spender,
            chore.transaction(),
        ):
            held = await lock_due_lots(chore, expires, 10)
            assert sorted(lot.participant_id for lot in held) == ["poor", "rich"]
            return [await pay(spender, "rich", 10), await pay(spender, "poor", 1)]

    # "rich" pays from the points that never expire; "poor" has nothing else.
    assert asyncio.run(scenario()) == ["paid, 100 left", "refused at 0"]
    assert lots_of(url, tenant, "rich") == [(10, 10, expires)]
    assert expire(url, expires) == 2
    assert points(url, tenant, "rich", expires)["balance"] == 90


def test_a_participants_lots_are_exported_and_erased_with_them(
    story: Story, postgres_server: Server
) -> None:
    url, tenant = postgres_server.url, tenant_of(story)
    story.define("points-rules", rule("order", "order", 10, days=5))
    for pid in ("gone", "kept"):
        story.send("order", pid, timestamp=at(T0))
    exported = story.get("/participants/gone/export")["stored"]["points_lots"]
    assert [(lot["amount"], lot["remaining"]) for lot in exported] == [(10, 10)]
    erased = story.api.delete("/api/v1/gamify/participants/gone", headers=story.headers)
    assert erased.status_code == 200, erased.text
    assert lots_of(url, tenant, "gone") == []
    assert lots_of(url, tenant, "kept") == [(10, 10, T0 + timedelta(days=5))]
