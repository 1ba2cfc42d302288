"""Shared steps of the leaderboard tests: a tenant with boards, batches processed with the
Redis mirror kept, and the standings read back from every place they live."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
from redis.asyncio import Redis

from bricqs.mechanics.cache import RuleCache
from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS
from bricqs.mechanics.standings import keys_of, rebuild, run_of
from bricqs.pipeline import process_envelopes
from bricqs.schemas import Envelope
from bricqs.storage.definitions import create_definition
from bricqs.storage.rankings import run_standings
from bricqs.storage.standings import Standings
from bricqs.storage.tenants import Tenant

Ranking = list[tuple[str, float]]


async def define(
    conn: psycopg.AsyncConnection[Any], tenant: Tenant, segment: str, raw: dict[str, Any]
) -> None:
    """Store one active definition, as the admin api would."""
    kind, schema = KINDS[segment]
    definition = parse_definition(schema, raw)
    assert not isinstance(definition, list), definition
    await create_definition(
        conn, tenant, kind, raw["code"], "active", msgspec.json.encode(definition).decode()
    )


async def build_all(
    conn: psycopg.AsyncConnection[Any], redis: Redis, tenant: Tenant, now: datetime
) -> None:
    """Build every board of the tenant (as the first read or the admin command does)."""
    rules = await RuleCache(0)(conn, tenant)
    for board in rules.leaderboards.values():
        async with conn.transaction():
            await rebuild(conn, Standings(redis), tenant, board, now)


async def process(
    conn: psycopg.AsyncConnection[Any], redis: Redis, batch: Sequence[Envelope]
) -> None:
    """One processor batch, with the mirror kept."""
    async with conn.transaction():
        await process_envelopes(
            conn,
            batch,
            idempotency_ttl=timedelta(days=30),
            rules_for=RuleCache(0),
            standings=Standings(redis),
        )


async def mirrored(
    conn: psycopg.AsyncConnection[Any], redis: Redis, tenant: Tenant, code: str, group: str = ""
) -> Ranking:
    """The current run of a board as its Redis mirror ranks it."""
    rules = await RuleCache(0)(conn, tenant)
    run = run_of(rules.leaderboards[code], datetime.now(UTC))
    _, rows = await Standings(redis).top(keys_of(tenant, code, run), group, 0, 100_000)
    return rows


async def stored(
    conn: psycopg.AsyncConnection[Any], tenant: Tenant, code: str, run: int
) -> list[tuple[str, float, datetime, str]]:
    """A run's standings in PostgreSQL, in ranking order."""
    rows = await run_standings(conn, tenant, code, run)
    ordered = sorted(rows, key=lambda r: (-r.score, r.reached_at, r.participant_id))
    return [(r.participant_id, r.score, r.reached_at, r.group) for r in ordered]
