"""Participant conditions, segments and boosts: conditions read `participant.<attr>` and
segments; boosts multiply earn rules' points for facts that occurred in their window."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from bench.rule_engine import TWENTY_RULES
from bricqs.ids import fact_id_for_event, new_event_id
from bricqs.mechanics.boosts import CompiledBoost, apply_boosts
from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.conditions import NOBODY, Participant, compile_condition
from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS, Boost
from bricqs.mechanics.ruleset import RuleSet
from bricqs.pipeline import process_envelopes
from bricqs.schemas import Envelope, Fact
from bricqs_devstack.servers import Server
from tests.conftest import Story

GAMIFY = "/api/v1/gamify"
TEN_POINTS = {
    "code": "buy",
    "name": "Buy",
    "trigger": {"fact_type": "custom.purchase"},
    "amount": {"fixed": 10},
}


MAY_1 = ("2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z")


def segment(code: str, condition: dict[str, Any]) -> dict[str, Any]:
    return {"code": code, "name": code, "condition": condition}


def boost(code: str, multiplier: float, starts: str, ends: str, **more: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": code,
        "multiplier": multiplier,
        "starts_at": starts,
        "ends_at": ends,
        **more,
    }


def set_attributes(story: Story, pid: str, attributes: dict[str, Any]) -> None:
    response = story.api.patch(
        f"{GAMIFY}/participants/{pid}", headers=story.headers, json={"attributes": attributes}
    )
    assert response.status_code == 200, response.text


def earned(answer: dict[str, Any]) -> list[tuple[int, list[dict[str, Any]] | None]]:
    """(amount, boosts) of each points.awarded effect of a sync answer."""
    return [(p["amount"], p.get("boosts")) for p in answer["effects"].get("points", [])]


def ledger_boosts(url: str, project_id: str, pid: str) -> list[tuple[int, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT amount, boosts FROM points_ledger WHERE project_id = %s"
            " AND participant_id = %s ORDER BY occurred_at",
            (project_id, pid),
        ).fetchall()
    return [(int(r[0]), r[1]) for r in rows]


# ---------------------------------------------------------------------------------------
# Boosts through the engine (sync endpoint, api)


def test_boost_starting_mid_day_applies_from_that_instant_until_its_end(
    story: Story, postgres_server: Server
) -> None:
    story.define("points-rules", TEN_POINTS)
    story.define("boosts", boost("double", 2, "2026-05-01T14:30:00Z", "2026-05-02T00:00:00Z"))
    double = [{"code": "double", "multiplier": 2.0}]
    times = ["14:29:59", "14:30:00", "23:59:59"]
    answers = [story.send("purchase", "ann", timestamp=f"2026-05-01T{t}Z") for t in times]
    answers.append(story.send("purchase", "ann", timestamp="2026-05-02T00:00:00Z"))
    assert [earned(a) for a in answers] == [
        [(10, None)],
        [(20, double)],
        [(20, double)],
        [(10, None)],
    ]
    assert ledger_boosts(postgres_server.url, story.tenant.project_id, "ann") == [
        (10, None),
        (20, double),
        (20, double),
        (10, None),
    ]
    assert story.get("/participants/ann/points")["balance"] == 60


def test_two_overlapping_boosts_multiply_and_round_once(story: Story) -> None:
    story.define(
        "points-rules",
        {
            "code": "spend",
            "name": "Spend",
            "trigger": {"fact_type": "custom.purchase"},
            "amount": {"property": "amount"},
        },
    )
    story.define(
        "boosts",
        boost("half-more", 1.5, "2026-05-01T10:00:00Z", "2026-05-01T14:00:00Z", rounding="ceil"),
    )
    story.define(
        "boosts",
        boost("quarter-more", 1.25, "2026-05-01T12:00:00Z", "2026-05-01T16:00:00Z"),
    )
    alone = story.send("purchase", "bob", {"amount": 3}, "2026-05-01T11:00:00Z")
    both = story.send("purchase", "bob", {"amount": 3}, "2026-05-01T13:00:00Z")
    later = story.send("purchase", "bob", {"amount": 3}, "2026-05-01T15:00:00Z")
    assert earned(alone) == [(5, [{"code": "half-more", "multiplier": 1.5}])]  # ceil(4.5)
    # 3 x 1.5 x 1.25 = 5.625, rounded once with the least generous rounding (floor): 5.
    # Rounding after each boost would give ceil(4.5) = 5, then floor(6.25) = 6.
    assert earned(both) == [
        (
            5,
            [
                {"code": "half-more", "multiplier": 1.5},
                {"code": "quarter-more", "multiplier": 1.25},
            ],
        )
    ]
    assert earned(later) == [(3, [{"code": "quarter-more", "multiplier": 1.25}])]  # floor


def test_boost_scoped_to_a_segment_and_to_a_participant_list(story: Story) -> None:
    story.define("points-rules", TEN_POINTS)
    gold = {"path": "participant.tier", "op": "eq", "value": "gold"}
    story.define("segments", segment("gold", gold))
    story.define("boosts", boost("gold-x3", 3, *MAY_1, scope="segment", segment="gold"))
    story.define("boosts", boost("bob-x2", 2, *MAY_1, scope="participants", participants=["bob"]))
    set_attributes(story, "ann", {"tier": "gold"})
    set_attributes(story, "cat", {"tier": "silver"})
    at = "2026-05-01T12:00:00Z"
    amounts = {
        pid: earned(story.send("purchase", pid, timestamp=at)) for pid in ("ann", "bob", "cat")
    }
    assert amounts == {
        "ann": [(30, [{"code": "gold-x3", "multiplier": 3.0}])],
        "bob": [(20, [{"code": "bob-x2", "multiplier": 2.0}])],
        "cat": [(10, None)],
    }


def test_boost_applies_only_to_the_rules_it_names(story: Story) -> None:
    story.define("points-rules", TEN_POINTS)
    story.define("points-rules", {**TEN_POINTS, "code": "buy-too", "amount": {"fixed": 1}})
    story.define("boosts", boost("x2", 2, *MAY_1, rules=["buy"]))
    answer = story.send("purchase", "dan", timestamp="2026-05-01T12:00:00Z")
    assert sorted(earned(answer), key=lambda e: e[0]) == [
        (1, None),
        (20, [{"code": "x2", "multiplier": 2.0}]),
    ]


def test_late_event_from_the_window_is_boosted_after_the_boost_ended(story: Story) -> None:
    story.define("points-rules", TEN_POINTS)
    ended = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    started = ended - timedelta(hours=2)
    story.define("boosts", boost("happy-hour", 2, started.isoformat(), ended.isoformat()))
    # Sent now, after the boost ended, but it occurred during it.
    late = story.send("purchase", "eve", timestamp=(ended - timedelta(minutes=1)).isoformat())
    on_time_now = story.send("purchase", "eve")
    assert earned(late) == [(20, [{"code": "happy-hour", "multiplier": 2.0}])]
    assert earned(on_time_now) == [(10, None)]


def test_caps_apply_to_the_boosted_amount(story: Story) -> None:
    story.define("points-rules", {**TEN_POINTS, "cap": {"amount": 25, "period": "day"}})
    story.define("boosts", boost("x2", 2, *MAY_1))
    amounts = [
        earned(story.send("purchase", "fay", timestamp=f"2026-05-01T0{h}:00:00Z")) for h in range(3)
    ]
    x2 = [{"code": "x2", "multiplier": 2.0}]
    assert amounts == [[(20, x2)], [(5, x2)], []]


# ---------------------------------------------------------------------------------------
# Participant conditions


def test_participant_condition_in_a_trigger_reads_attributes_when_processed(
    story: Story,
) -> None:
    story.define(
        "points-rules",
        {
            **TEN_POINTS,
            "trigger": {
                "fact_type": "custom.purchase",
                "where": {"path": "participant.country", "op": "eq", "value": "FR"},
            },
        },
    )
    set_attributes(story, "ann", {"country": "FR"})
    set_attributes(story, "bob", {"country": "DE"})
    assert earned(story.send("purchase", "ann")) == [(10, None)]
    assert earned(story.send("purchase", "bob")) == []
    assert earned(story.send("purchase", "new")) == []  # no attributes at all
    set_attributes(story, "ann", {"country": "DE"})
    assert earned(story.send("purchase", "ann")) == []


def test_segment_reference_in_a_trigger(story: Story) -> None:
    adults = {
        "all": [
            {"path": "participant.age", "op": "gte", "value": 18},
            {"path": "participant.banned", "op": "ne", "value": True},
        ]
    }
    story.define("segments", segment("adults", adults))
    story.define(
        "points-rules",
        {**TEN_POINTS, "trigger": {"fact_type": "custom.purchase", "where": {"segment": "adults"}}},
    )
    set_attributes(story, "ann", {"age": 30, "banned": False})
    set_attributes(story, "kid", {"age": 12})
    set_attributes(story, "bad", {"age": 40, "banned": True})
    assert [earned(story.send("purchase", p)) for p in ("ann", "kid", "bad")] == [
        [(10, None)],
        [],
        [],
    ]


def test_participant_condition_in_a_badge_criterion(story: Story) -> None:
    story.define(
        "badges",
        {
            "code": "local-regular",
            "name": "Local regular",
            "criteria": [
                {
                    "criterion": {
                        "fact_type": "custom.purchase",
                        "where": {
                            "all": [
                                {"path": "participant.country", "op": "eq", "value": "FR"},
                                {"path": "store", "op": "eq", "value": "paris"},
                            ]
                        },
                    },
                    "threshold": 2,
                }
            ],
        },
    )
    set_attributes(story, "ann", {"country": "FR"})
    set_attributes(story, "bob", {"country": "DE"})
    for pid in ("ann", "bob"):
        story.send("purchase", pid, {"store": "paris"})
        story.send("purchase", pid, {"store": "lyon"})  # the fact's own condition fails
        story.send("purchase", pid, {"store": "paris"})
    assert [b["badge"] for b in story.get("/participants/ann/badges")["earned"]] == [
        "local-regular"
    ]
    assert story.get("/participants/bob/badges")["earned"] == []


# ---------------------------------------------------------------------------------------
# Definitions: validated with field errors


@pytest.mark.parametrize(
    ("segment", "body", "field"),
    [
        (
            "segments",
            {"code": "s", "name": "S", "condition": {"path": "country", "op": "eq", "value": 1}},
            "condition",
        ),
        ("segments", {"code": "s", "name": "S", "condition": {"segment": "other"}}, "condition"),
        (
            "segments",
            {"code": "s", "name": "S", "condition": {"path": "participant.x"}},
            "condition.op",
        ),
        ("boosts", boost("b", 2, "2026-05-02T00:00:00Z", "2026-05-01T00:00:00Z"), "ends_at"),
        ("boosts", boost("b", 2, "2026-05-01T00:00:00", "2026-05-02T00:00:00Z"), "starts_at"),
        ("boosts", boost("b", 0, *MAY_1), "multiplier"),
        (
            "boosts",
            boost("b", 2, *MAY_1, scope="segment"),
            "segment",
        ),
        (
            "boosts",
            boost("b", 2, *MAY_1, participants=["x"]),
            "participants",
        ),
        (
            "boosts",
            boost(
                "b",
                2,
                "2026-05-01T00:00:00Z",
                "2026-05-02T00:00:00Z",
                scope="participants",
                participants=[f"p{i}" for i in range(1001)],
            ),
            "participants",
        ),
        (
            "points-rules",
            {**TEN_POINTS, "trigger": {"fact_type": "custom.x", "where": {"segment": "Bad Code"}}},
            "trigger.where.segment",
        ),
    ],
)
def test_invalid_segments_and_boosts_are_refused_with_field_errors(
    story: Story, segment: str, body: dict[str, Any], field: str
) -> None:
    response = story.api.post(f"{GAMIFY}/admin/{segment}", headers=story.headers, json=body)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


def test_segments_and_boosts_are_listed_like_other_kinds(story: Story) -> None:
    story.define("boosts", boost("b", 1.5, *MAY_1))
    items = story.get("/admin/boosts")["items"]
    assert [(b["code"], b["multiplier"], b["scope"], b["rules"]) for b in items] == [
        ("b", 1.5, "everyone", None)
    ]


# ---------------------------------------------------------------------------------------
# Pure: rounding, and no attribute reads for rule sets that do not need them


def a_fact(at: datetime, pid: str = "p") -> Fact:
    event_id = new_event_id()
    return Fact(
        fact_id=fact_id_for_event(event_id),
        fact_type="custom.purchase",
        project_id="p",
        environment="live",
        participant_id=pid,
        event_id=event_id,
        properties={},
        occurred_at=at,
    )


def compiled(raw: dict[str, Any]) -> CompiledBoost:
    parsed = parse_definition(Boost, raw)
    assert isinstance(parsed, Boost), parsed
    return CompiledBoost.build(parsed)


@pytest.mark.parametrize(
    ("amount", "multiplier", "rounding", "expected"),
    [
        (5, 1.5, "floor", 7),
        (5, 1.5, "ceil", 8),
        (5, 1.5, "round", 8),
        (3, 1.5, "round", 4),  # halves to even, as a points rule's own rounding
        (100, 1.1, "ceil", 110),  # 110.00000000000001 in binary floats
        (45, 1.4, "floor", 63),  # 62.99999999999999
        (3, 0.1, "floor", 0),
    ],
)
def test_boost_rounding(amount: int, multiplier: float, rounding: str, expected: int) -> None:
    window = {"starts_at": "2026-05-01T00:00:00Z", "ends_at": "2026-05-02T00:00:00Z"}
    b = compiled(
        {"code": "b", "name": "b", "multiplier": multiplier, "rounding": rounding, **window}
    )
    at = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert apply_boosts([b], "rule", a_fact(at), NOBODY, amount)[0] == expected


def test_zero_after_a_boost_below_one_writes_no_entry(story: Story) -> None:
    story.define("points-rules", {**TEN_POINTS, "amount": {"fixed": 3}})
    story.define("boosts", boost("tenth", 0.1, *MAY_1))
    assert earned(story.send("purchase", "gus", timestamp="2026-05-01T12:00:00Z")) == []
    assert story.get("/participants/gus/points/transactions")["items"] == []


def test_rules_without_participant_paths_read_no_attributes() -> None:
    definitions = []
    for segment, raw in TWENTY_RULES:
        parsed = parse_definition(KINDS[segment][1], raw)
        assert not isinstance(parsed, list)
        definitions.append(parsed)
    assert RuleSet.compile(definitions).reads_participants is False
    everyone = compiled(boost("b", 2, *MAY_1))
    assert RuleSet.compile([*definitions, everyone.boost]).reads_participants is False
    by_segment = parse_definition(
        Boost,
        boost("s", 2, *MAY_1, scope="segment", segment="v"),
    )
    assert not isinstance(by_segment, list)
    assert RuleSet.compile([*definitions, by_segment]).reads_participants is True


def test_participant_paths_read_attributes_not_properties() -> None:
    is_fr = compile_condition({"path": "participant.country", "op": "eq", "value": "FR"})
    nested = compile_condition({"path": "participant.address.city", "op": "eq", "value": "Lyon"})
    fr = Participant({"country": "FR", "address": {"city": "Lyon"}})
    assert is_fr.holds({}, fr)
    assert not is_fr.holds({"participant": {"country": "FR"}}, NOBODY)
    assert nested.holds({}, fr)
    vip = compile_condition({"any": [{"segment": "vip"}, {"path": "x", "op": "eq", "value": 1}]})
    assert vip.holds({}, Participant({}, frozenset({"vip"})))
    assert not vip.holds({}, Participant({}, frozenset({"gold"})))


# ---------------------------------------------------------------------------------------
# Replay


def purchase(story: Story, pid: str, at: datetime) -> Envelope:
    """A purchase event as ingest queues it."""
    return Envelope(
        event_id=new_event_id(),
        project_id=story.tenant.project_id,
        environment="live",
        event_name="purchase",
        participant_id=pid,
        properties={},
        occurred_at=at,
        received_at=at,
    )


def test_replaying_boosted_events_changes_no_ledger_entry(
    story: Story, postgres_server: Server
) -> None:
    story.define("points-rules", TEN_POINTS)
    story.define("segments", segment("fr", {"path": "participant.c", "op": "eq", "value": "FR"}))
    story.define(
        "boosts",
        boost(
            "fr", 2, "2026-05-01T12:00:00Z", "2026-05-02T00:00:00Z", scope="segment", segment="fr"
        ),
    )
    set_attributes(story, "ann", {"c": "FR"})
    start = datetime(2026, 5, 1, 10, tzinfo=UTC)
    envelopes = [purchase(story, "ann", start + timedelta(hours=h)) for h in range(6)]
    url = postgres_server.url

    async def process(batch: list[Envelope]) -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            await process_envelopes(
                conn, batch, idempotency_ttl=timedelta(days=30), rules_for=RuleCache(0)
            )

    asyncio.run(process(envelopes))
    first = ledger_boosts(url, story.tenant.project_id, "ann")
    assert [amount for amount, _ in first] == [10, 10, 20, 20, 20, 20]
    asyncio.run(process(envelopes[::-1]))
    assert ledger_boosts(url, story.tenant.project_id, "ann") == first


def test_points_earned_on_outcomes_are_not_boosted(story: Story) -> None:
    story.define("points-rules", TEN_POINTS)
    story.define(
        "points-rules",
        {
            "code": "on-badge",
            "name": "n",
            "trigger": {"fact_type": "badge.awarded"},
            "amount": {"fixed": 7},
        },
    )
    story.define(
        "badges",
        {
            "code": "first",
            "name": "n",
            "criteria": [{"criterion": {"fact_type": "custom.purchase"}, "threshold": 1}],
        },
    )
    story.define("boosts", boost("x2", 2, *MAY_1))
    answer = story.send("purchase", "hal", timestamp="2026-05-01T12:00:00Z")
    assert sorted(earned(answer), key=lambda e: e[0]) == [
        (7, None),
        (20, [{"code": "x2", "multiplier": 2.0}]),
    ]


class RecordingConnection(psycopg.AsyncConnection[Any]):
    """A real connection that keeps the text of every statement run through `execute`."""

    statements: list[str]

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self.statements.append(str(query))
        return await super().execute(query, params, **kwargs)


@pytest.mark.parametrize("reads", [True, False])
def test_attributes_are_read_once_per_batch_and_only_when_a_rule_reads_them(
    story: Story, postgres_server: Server, reads: bool
) -> None:
    where = {"path": "participant.country", "op": "exists", "value": False} if reads else None
    story.define(
        "points-rules", {**TEN_POINTS, "trigger": {**TEN_POINTS["trigger"], "where": where}}
    )
    # points.awarded triggers more rounds (4, till the chain is cut): still one read.
    story.define(
        "points-rules",
        {
            "code": "echo",
            "name": "n",
            "trigger": {"fact_type": "points.awarded"},
            "amount": {"fixed": 1},
        },
    )
    at = datetime(2026, 5, 1, tzinfo=UTC)
    batch = [purchase(story, pid, at) for pid in ("ann", "bob", "cat")]

    async def process() -> list[str]:
        conn = await RecordingConnection.connect(postgres_server.url)
        conn.statements = []
        async with conn, conn.transaction():
            await process_envelopes(
                conn, batch, idempotency_ttl=timedelta(days=30), rules_for=RuleCache(0)
            )
        return conn.statements

    statements = asyncio.run(process())
    reads_attributes = [s for s in statements if "SELECT participant_id, attributes FROM" in s]
    assert len(reads_attributes) == (1 if reads else 0)
    assert story.get("/participants/bob/points")["balance"] == 10 + 4
