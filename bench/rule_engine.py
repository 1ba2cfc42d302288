"""Pure benchmark: facts per second through rule matching with 20 active rules.

No servers: this times `match_facts` (conditions, criteria contributions, windows, earn
amounts, streak hits), the per-fact, per-rule part of the engine. Run:
    uv run python -m bench.rule_engine [--facts 200000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import workload
from bench.workload import BUY, LEVEL, LOGIN
from bricqs.ids import fact_id_for_event, new_event_id
from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS
from bricqs.mechanics.matching import match_facts
from bricqs.mechanics.ruleset import RuleSet
from bricqs.schemas import Fact

USD = {"path": "currency", "op": "eq", "value": "USD"}

# Twenty active definitions of every kind, most of them on the hottest fact type.
TWENTY_RULES: list[tuple[str, dict[str, Any]]] = [
    (
        "points-rules",
        {
            "code": "spend",
            "name": "n",
            "trigger": {"fact_type": BUY, "where": USD},
            "amount": {"property": "amount", "multiplier": 1.0},
        },
    ),
    (
        "points-rules",
        {
            "code": "big-spend",
            "name": "n",
            "trigger": {
                "fact_type": BUY,
                "where": {"all": [USD, {"path": "amount", "op": "gte", "value": 100}]},
            },
            "amount": {"fixed": 50},
        },
    ),
    (
        "points-rules",
        {
            "code": "level",
            "name": "n",
            "trigger": {"fact_type": LEVEL},
            "amount": {"property": "level", "multiplier": 10},
            "cap": {"amount": 500, "period": "day"},
        },
    ),
    (
        "points-rules",
        {
            "code": "login",
            "name": "n",
            "trigger": {"fact_type": LOGIN},
            "amount": {"fixed": 1},
            "cap": {"amount": 1, "period": "day"},
        },
    ),
    (
        "points-rules",
        {
            "code": "vip",
            "name": "n",
            "trigger": {
                "fact_type": BUY,
                "where": {"path": "tags", "op": "contains", "value": "vip"},
            },
            "amount": {"fixed": 20},
        },
    ),
    (
        "badges",
        {
            "code": "ten-buys",
            "name": "n",
            "criteria": [{"criterion": {"fact_type": BUY}, "threshold": 10}],
        },
    ),
    (
        "badges",
        {
            "code": "big-spender",
            "name": "n",
            "criteria": [
                {
                    "criterion": {"fact_type": BUY, "aggregate": "sum", "property": "amount"},
                    "threshold": 1000,
                }
            ],
        },
    ),
    (
        "badges",
        {
            "code": "explorer",
            "name": "n",
            "criteria": [
                {
                    "criterion": {
                        "fact_type": BUY,
                        "aggregate": "distinct",
                        "property": "product_id",
                    },
                    "threshold": 20,
                }
            ],
        },
    ),
    (
        "badges",
        {
            "code": "weekly",
            "name": "n",
            "repeatable": True,
            "criteria": [
                {
                    "criterion": {
                        "fact_type": BUY,
                        "window": {
                            "type": "calendar",
                            "period": "week",
                            "timezone": "Europe/Paris",
                        },
                    },
                    "threshold": 5,
                }
            ],
        },
    ),
    (
        "badges",
        {
            "code": "high-score",
            "name": "n",
            "criteria": [
                {
                    "criterion": {"fact_type": LEVEL, "aggregate": "max", "property": "score"},
                    "threshold": 9000,
                }
            ],
        },
    ),
    (
        "badges",
        {
            "code": "grinder",
            "name": "n",
            "criteria": [
                {
                    "criterion": {"fact_type": LEVEL, "window": {"type": "rolling", "days": 7}},
                    "threshold": 50,
                }
            ],
        },
    ),
    (
        "challenges",
        {
            "code": "shopper",
            "name": "n",
            "objectives": [
                {"code": "buys", "criterion": {"fact_type": BUY}, "target": 3},
                {"code": "levels", "criterion": {"fact_type": LEVEL}, "target": 3},
            ],
        },
    ),
    (
        "challenges",
        {
            "code": "week-sprint",
            "name": "n",
            "window": {"type": "rolling", "days": 7},
            "objectives": [
                {
                    "code": "spend",
                    "criterion": {"fact_type": BUY, "aggregate": "sum", "property": "amount"},
                    "target": 500,
                }
            ],
        },
    ),
    (
        "challenges",
        {
            "code": "usd-only",
            "name": "n",
            "objectives": [
                {"code": "o", "criterion": {"fact_type": BUY, "where": USD}, "target": 5}
            ],
        },
    ),
    (
        "streaks",
        {
            "code": "daily-buy",
            "name": "n",
            "trigger": {"fact_type": BUY},
            "timezone": "America/New_York",
        },
    ),
    (
        "streaks",
        {"code": "daily-play", "name": "n", "trigger": {"fact_type": LEVEL}, "grace_hours": 3},
    ),
    (
        "streaks",
        {"code": "weekly-login", "name": "n", "trigger": {"fact_type": LOGIN}, "period": "week"},
    ),
    ("leaderboards", {"code": "spenders", "name": "n", "period": "weekly"}),
    (
        "leaderboards",
        {
            "code": "scores",
            "name": "n",
            "metric": "criterion",
            "period": "monthly",
            "criterion": {"fact_type": LEVEL, "aggregate": "max", "property": "score"},
        },
    ),
    (
        "tiers",
        {
            "code": "status",
            "name": "n",
            "levels": [
                {"code": "a", "name": "A", "min_points": 0},
                {"code": "b", "name": "B", "min_points": 1000},
            ],
        },
    ),
]


RULE_COUNTS = (0, 1, 5, 10, 20, 50)
"""The rule counts of the processor's cost table."""


def rules(n: int) -> list[tuple[str, dict[str, Any]]]:
    """`n` active definitions: the first `n` of TWENTY_RULES, then copies of them under new
    codes whose criteria and triggers are their own (each copy's conditions name its
    number), so every rule added writes its own rows, as distinct rules of a project do."""
    found = list(TWENTY_RULES[:n])
    copy = 1
    while len(found) < n:
        for segment, raw in TWENTY_RULES[: n - len(found)]:
            found.append((segment, _variant(raw, copy) | {"code": f"{raw['code']}-{copy}"}))
        copy += 1
    return found


def _variant(value: Any, copy: int) -> Any:
    """`value` with every criterion and trigger also asking for a property the events never
    have, or this copy's number in it (always true, but a criterion of its own)."""
    if isinstance(value, list):
        return [_variant(v, copy) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _variant(v, copy) for k, v in value.items()}
    if "fact_type" in out:
        own = {
            "any": [
                {"path": "variant", "op": "exists", "value": False},
                {"path": "variant", "op": "eq", "value": copy},
            ]
        }
        out["where"] = {"all": [out["where"], own]} if "where" in out else own
    return out


def twenty_rules() -> RuleSet:
    """The benchmark's rule set (also used by the processor benchmark)."""
    definitions = []
    for segment, raw in TWENTY_RULES:
        parsed = parse_definition(KINDS[segment][1], raw)
        assert not isinstance(parsed, list), (raw["code"], parsed)
        definitions.append(parsed)
    assert len(definitions) == 20
    return RuleSet.compile(definitions)


def make_facts(n: int, seed: int = 1) -> list[Fact]:
    """The benchmark's event mix (bench/workload.py) as facts, over 30 days of November."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    facts = []
    for event in workload.events(n, seed):
        event_id = new_event_id()
        facts.append(
            Fact(
                fact_id=fact_id_for_event(event_id),
                fact_type="custom." + event["event_name"],
                project_id="prj_bench",
                environment="live",
                participant_id=event["participant_id"],
                event_id=event_id,
                properties=event["properties"],
                occurred_at=start + timedelta(seconds=rng.randrange(30 * 86400)),
            )
        )
    return facts


def matching_rate(facts: list[Fact], batch: int = 500) -> dict[str, Any]:
    """Facts per second through `match_facts` with the 20 rules, in batches of `batch`."""
    rules = twenty_rules()
    match_facts(rules, facts[:batch])  # warm caches (zoneinfo, regexes)
    started = time.perf_counter()
    hits = 0
    for i in range(0, len(facts), batch):
        m = match_facts(rules, facts[i : i + batch])
        hits += len(m.progress) + len(m.earned) + len(m.streak_hits)
    elapsed = time.perf_counter() - started
    return {
        "rules": 20,
        "facts": len(facts),
        "seconds": round(elapsed, 3),
        "events_per_second": round(len(facts) / elapsed),
        "effects": hits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--facts", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args()
    result = {"benchmark": "rule_matching", **matching_rate(make_facts(args.facts), args.batch)}
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out)


if __name__ == "__main__":
    main()
