"""Reading criterion buckets for judging: ranges of bucket names, and the index they use."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS, Criterion, Window
from bricqs.mechanics.evaluation import bucket_ranges, evaluation_points
from bricqs.mechanics.matching import match_facts
from bricqs.mechanics.ruleset import CompiledCriterion, RuleSet
from bricqs.mechanics.windows import day_key
from bricqs.schemas import Fact
from bricqs.storage.progress import BucketRange, ProgressDelta, add_progress, read_buckets
from bricqs.storage.rankings import criterion_ranking
from bricqs.storage.tenants import Tenant
from bricqs_devstack.servers import Server
from tests import conftest

BUY = "custom.purchase_completed"
WEEK = CompiledCriterion.build(
    Criterion(fact_type=BUY, window=Window(type="rolling", days=7)),
)
FOREVER = CompiledCriterion.build(Criterion(fact_type=BUY))
PRODUCTS_SKU = CompiledCriterion.build(
    Criterion(fact_type=BUY, aggregate="distinct", property="sku")
)
PRODUCTS = CompiledCriterion.build(
    Criterion(fact_type=BUY, aggregate="distinct", property="product_id")
)


def at(day: int) -> datetime:
    return datetime(2026, 11, 1, 12, tzinfo=UTC) + timedelta(days=day - 1)


def days(first: date, last: date) -> list[str]:
    return [day_key(first + timedelta(n)) for n in range((last - first).days + 1)]


def covered(ranges: list[BucketRange], names: list[str]) -> set[str]:
    return {n for n in names if any(r.first <= n <= r.last for r in ranges)}


def test_rolling_windows_of_nearby_facts_are_one_range_holding_exactly_their_buckets() -> None:
    points = evaluation_points(WEEK.window, [at(10), at(13)])
    ranges, distinct = bucket_ranges([(WEEK, "u1", points)])
    # Every 7-day window containing the 10th or the 13th: from the 4th to the 19th.
    assert ranges == [BucketRange(WEEK.criterion_id, "u1", "d:2026-11-04", "d:2026-11-19")]
    needed = {b for p in points for b in p.buckets}
    month = days(date(2026, 10, 1), date(2026, 12, 31))
    assert covered(ranges, month) == needed
    assert distinct == []


def test_facts_far_apart_give_separate_ranges_and_nothing_in_between() -> None:
    points = evaluation_points(WEEK.window, [at(1), at(28)])
    ranges, _ = bucket_ranges([(WEEK, "u1", points)])
    assert [(r.first, r.last) for r in ranges] == [
        ("d:2026-10-26", "d:2026-11-07"),
        ("d:2026-11-22", "d:2026-12-04"),
    ]
    assert "d:2026-11-15" not in covered(ranges, days(date(2026, 11, 1), date(2026, 11, 30)))


def test_ranges_are_per_criterion_and_participant_and_distinct_ones_are_read_apart() -> None:
    ranges, distinct = bucket_ranges(
        [
            (FOREVER, "u1", evaluation_points(None, [at(3)])),
            (FOREVER, "u2", evaluation_points(None, [at(3)])),
            (PRODUCTS, "u1", evaluation_points(None, [at(3)])),
        ]
    )
    assert sorted(ranges) == sorted(
        [
            BucketRange(FOREVER.criterion_id, "u1", "all", "all"),
            BucketRange(FOREVER.criterion_id, "u2", "all", "all"),
        ]
    )
    # A distinct criterion's values are in criterion_distinct; it has no progress rows.
    assert distinct == [BucketRange(PRODUCTS.criterion_id, "u1", "all", "all")]


def test_a_single_bucket_the_caller_holds_is_not_read_again() -> None:
    # The round just wrote u1's whole-history bucket and its November: neither is read;
    # its December is. u2's was not written, the days of a rolling window are a range, and distinct
    # values are never held: those are read.
    monthly = CompiledCriterion.build(
        Criterion(fact_type=BUY, window=Window(type="calendar", period="month"))
    )
    known = {(FOREVER.criterion_id, "u1", "all"), (monthly.criterion_id, "u1", "m:2026-11")}
    ranges, distinct = bucket_ranges(
        [
            (FOREVER, "u1", evaluation_points(None, [at(3)])),
            (FOREVER, "u2", evaluation_points(None, [at(3)])),
            (monthly, "u1", evaluation_points(monthly.window, [at(3), at(32)])),
            (WEEK, "u1", evaluation_points(WEEK.window, [at(3)])),
            (PRODUCTS, "u1", evaluation_points(None, [at(3)])),
        ],
        known=known,
    )
    assert ranges == [
        BucketRange(FOREVER.criterion_id, "u2", "all", "all"),
        BucketRange(monthly.criterion_id, "u1", "m:2026-12", "m:2026-12"),
        BucketRange(WEEK.criterion_id, "u1", "d:2026-10-28", "d:2026-11-09"),
    ]
    assert distinct == [BucketRange(PRODUCTS.criterion_id, "u1", "all", "all")]


def _seed(conn: psycopg.AsyncConnection[Any], tenant: Tenant) -> Any:
    deltas = [
        ProgressDelta(WEEK.criterion_id, pid, day_key(date(2026, 11, d)), d, 0.0, None, at(d))
        for pid in ("u1", "u2")
        for d in (1, 5, 9, 20)
    ]
    return add_progress(conn, tenant, deltas)


def test_a_range_read_returns_the_participants_stored_buckets_in_it(
    postgres_server: Server, tenant: conftest.Tenant
) -> None:
    async def run(url: str) -> dict[tuple[str, str, str], Any]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            scope = Tenant(tenant.project_id, "live")
            await _seed(conn, scope)
            found, _ = await read_buckets(
                conn, scope, [BucketRange(WEEK.criterion_id, "u1", "d:2026-11-05", "d:2026-11-19")]
            )
            await conn.rollback()
            return found

    found = asyncio.run(run(postgres_server.url))
    assert {(k[1], k[2]): v.facts for k, v in found.items()} == {
        ("u1", "d:2026-11-05"): 5,
        ("u1", "d:2026-11-09"): 9,
    }


def test_progress_has_only_its_primary_key_and_ranking_reads_use_it(
    postgres_server: Server, tenant: conftest.Tenant
) -> None:
    """Every index on criterion_progress is paid on each bucket written (migration 0021):
    the table keeps its primary key only, and a criterion's ranking (a board's rebuild)
    reads one bucket of every participant through that key's (criterion) prefix."""

    async def run(url: str) -> tuple[list[str], list[tuple[str, float, datetime]], int]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            scope = Tenant(tenant.project_id, "live")
            await _seed(conn, scope)
            indexes = await conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'criterion_progress'"
            )
            await conn.execute("SET LOCAL enable_seqscan = off")
            scans = "SELECT pg_stat_get_xact_numscans('criterion_progress_pkey'::regclass)"
            before = (await (await conn.execute(scans)).fetchone() or [0])[0]
            ranking = await criterion_ranking(
                conn, scope, WEEK.criterion_id, "d:2026-11-09", "count"
            )
            used = (await (await conn.execute(scans)).fetchone() or [0])[0] - before
            await conn.rollback()
            return sorted(r[0] for r in await indexes.fetchall()), ranking, used

    indexes, ranking, used = asyncio.run(run(postgres_server.url))
    assert indexes == ["criterion_progress_pkey"]
    assert ranking == [("u1", 9.0, at(9)), ("u2", 9.0, at(9))]
    assert used == 1


def test_a_distinct_criterion_records_values_and_no_progress_row() -> None:
    badge = parse_definition(
        KINDS["badges"][1],
        {
            "code": "explorer",
            "name": "n",
            "criteria": [
                {
                    "criterion": {"fact_type": BUY, "aggregate": "distinct", "property": "sku"},
                    "threshold": 2,
                }
            ],
        },
    )
    assert not isinstance(badge, list)
    facts = [
        Fact(
            fact_id=f"fact_{n}",
            fact_type=BUY,
            project_id="p",
            environment="live",
            participant_id="u1",
            event_id=f"evt_{n}",
            properties={"sku": sku},
            occurred_at=at(n),
        )
        for n, sku in enumerate(["a", "b", "a"], start=1)
    ]
    matches = match_facts(RuleSet.compile([badge]), facts)
    assert matches.progress == []
    # Values are stored as JSON, so "1" and 1 stay distinct.
    assert sorted(value for *_, value, _ in matches.distinct) == ['"a"', '"a"', '"b"']
    assert list(matches.touched) == [("u1", PRODUCTS_SKU.criterion_id)]
