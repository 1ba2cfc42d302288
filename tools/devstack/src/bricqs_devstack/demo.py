"""The `demo` project `make run` creates on first start: keys and example mechanics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from bricqs.mechanics.definition_checks import parse_definition
from bricqs.mechanics.definitions import KINDS
from bricqs.storage import tenants
from bricqs.storage.definitions import create_definition
from bricqs.storage.tenants import Scope

# The README's examples send events and read state and leaderboards with the demo keys;
# nothing there changes definitions or awards by hand, so the demo keys cannot either.
DEMO_SCOPES: tuple[Scope, ...] = ("ingest", "read")


def ensure_demo_project(database_url: str, keys_file: Path) -> dict[str, str]:
    """Create the demo project and its keys on first start; afterwards read them back."""
    if keys_file.exists():
        saved: dict[str, str] = json.loads(keys_file.read_text())
        if asyncio.run(_project_exists(database_url, saved["project_id"])):
            return saved

    async def create() -> dict[str, str]:
        async with (
            await psycopg.AsyncConnection.connect(database_url) as conn,
            conn.transaction(),
        ):
            project = await tenants.create_project(conn, "demo")
            _, live = await tenants.create_key(conn, project.project_id, "live", scopes=DEMO_SCOPES)
            _, test = await tenants.create_key(conn, project.project_id, "test", scopes=DEMO_SCOPES)
            for environment in ("live", "test"):
                await _seed_definitions(conn, project.project_id, environment)
        return {"project_id": project.project_id, "live_key": live, "test_key": test}

    created = asyncio.run(create())
    keys_file.write_text(json.dumps(created, indent=2) + "\n")
    keys_file.chmod(0o600)
    return created


async def _project_exists(database_url: str, project_id: str) -> bool:
    """False when the saved keys belong to a database that was since wiped."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        return await tenants.find_project(conn, project_id) is not None


# Example mechanics for the demo project, driven by the Events API page's own examples.
DEMO_DEFINITIONS: list[tuple[str, dict[str, object]]] = [
    (
        "points-rules",
        {
            "code": "purchase-points",
            "name": "A point per dollar",
            "trigger": {
                "fact_type": "custom.purchase_completed",
                "where": {"path": "currency", "op": "eq", "value": "USD"},
            },
            "amount": {"property": "amount", "multiplier": 1, "rounding": "floor"},
        },
    ),
    (
        "points-rules",
        {
            "code": "level-points",
            "name": "Ten points per level",
            "trigger": {"fact_type": "custom.level_completed"},
            "amount": {"property": "level", "multiplier": 10},
            "cap": {"amount": 500, "period": "day"},
        },
    ),
    (
        "badges",
        {
            "code": "first-purchase",
            "name": "First purchase",
            "criteria": [{"criterion": {"fact_type": "custom.purchase_completed"}, "threshold": 1}],
        },
    ),
    (
        "challenges",
        {
            "code": "getting-started",
            "name": "Getting started",
            "objectives": [
                {"code": "browse", "criterion": {"fact_type": "custom.page_view"}, "target": 1},
                {"code": "cart", "criterion": {"fact_type": "custom.add_to_cart"}, "target": 1},
                {
                    "code": "buy",
                    "criterion": {"fact_type": "custom.purchase_completed"},
                    "target": 1,
                },
            ],
            "reward": {"points": 25},
        },
    ),
    (
        "streaks",
        {
            "code": "daily-play",
            "name": "Daily play",
            "trigger": {"fact_type": "custom.level_completed"},
        },
    ),
    ("leaderboards", {"code": "top-players", "name": "Top players", "period": "weekly"}),
    (
        "tiers",
        {
            "code": "loyalty",
            "name": "Loyalty",
            "levels": [
                {"code": "bronze", "name": "Bronze", "min_points": 0},
                {"code": "silver", "name": "Silver", "min_points": 100},
                {"code": "gold", "name": "Gold", "min_points": 1000},
            ],
        },
    ),
]


async def _seed_definitions(conn: Any, project_id: str, environment: str) -> None:
    tenant = tenants.Tenant(project_id, environment)
    for segment, raw in DEMO_DEFINITIONS:
        kind, schema = KINDS[segment]
        definition = parse_definition(schema, raw)
        assert not isinstance(definition, list), definition
        body = msgspec.json.encode(definition).decode()
        await create_definition(conn, tenant, kind, definition.code, "active", body)
