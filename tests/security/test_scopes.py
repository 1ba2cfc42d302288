"""Key scopes: every route of both services answers by the scope its OpenAPI declares;
keys made before scopes keep full access; the admin tool chooses and shows scopes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar import Litestar, Request, get
from litestar.testing import TestClient

from bricqs.auth import KeyCache
from bricqs.ids import ulid
from bricqs.keys import generate_key, hash_key
from bricqs.participant_tokens import ParticipantTokens
from bricqs.storage import tenants
from bricqs.storage.migrate import available_migrations, migrate
from bricqs.storage.tenants import SCOPES, KeyOwner
from bricqs.stream import stream_key
from bricqs.web.auth import authenticate
from bricqs.web.problems import exception_handlers
from bricqs_devstack.servers import Server
from tests.conftest import PARTICIPANT_TOKEN_SECRET
from tests.lib.test_storage import admin


def keys_by_scope(database_url: str) -> dict[str, str]:
    """A project with one live key per scope, each holding that scope only, and (as
    "participant token") a token for its participant u1."""

    async def create() -> dict[str, str]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            project = await tenants.create_project(conn, "scopes " + ulid())
            minted: dict[str, str] = {}
            for scope in SCOPES:
                _, minted[scope] = await tenants.create_key(
                    conn, project.project_id, "live", scopes=[scope]
                )
        tokens = ParticipantTokens(PARTICIPANT_TOKEN_SECRET)
        minted[TOKEN], _ = tokens.mint(project.project_id, "live", "u1")
        return minted

    return asyncio.run(create())


TOKEN = "participant token"


def credentials(scope: str, secret: str) -> dict[str, str]:
    if scope == TOKEN:
        return {"Authorization": f"Bearer {secret}"}
    return {"X-API-Key": secret}


def declared_routes(client: TestClient[Any]) -> list[tuple[str, str, frozenset[str]]]:
    """(method, path, scopes any of which a key needs, plus TOKEN when a participant
    token will do) of every operation in the service's OpenAPI document."""
    document = client.get("/schema/openapi.json").json()
    routes = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            security = operation.get("security", ())
            scopes = {scope for requirement in security for scope in requirement.get("apiKey", ())}
            if any("participantToken" in requirement for requirement in security):
                scopes.add(TOKEN)
            routes.append((method.upper(), path, frozenset(scopes)))
    return routes


def concrete(path: str) -> str:
    return path.replace("{participant_id}", "u1").replace("{code}", "no-such-code")


@pytest.mark.parametrize("service", ["api", "sync_ingest"])
def test_every_route_answers_by_the_scope_it_declares(
    service: str, request: pytest.FixtureRequest, postgres_server: Server
) -> None:
    client: TestClient[Any] = request.getfixturevalue(service)
    keys = keys_by_scope(postgres_server.url)
    routes = declared_routes(client)
    assert len(routes) >= 3
    undeclared = [(m, p) for m, p, scopes in routes if not scopes - {TOKEN}]
    assert undeclared == [], "every route must declare the scope its key needs"
    for method, path, scopes in routes:
        for scope, secret in keys.items():
            # An empty JSON object: a valid key gets past the scope check and then a 422
            # (or 404, or for harmless reads 200); nothing is created.
            headers = credentials(scope, secret)
            answer = client.request(method, concrete(path), headers=headers, json={})
            if scope in scopes:
                assert answer.status_code not in (401, 403), (method, path, scope, answer.text)
            else:
                assert answer.status_code == 403, (method, path, scope, answer.text)
                assert answer.headers["content-type"].startswith("application/problem+json")
                problem = answer.json()
                assert problem["code"] == "insufficient_scope"
                assert all(s in problem["scope"] for s in scopes - {TOKEN}), problem


def test_a_route_that_declares_no_scope_refuses_every_key(postgres_server: Server) -> None:
    async def lookup(key_hash: bytes) -> KeyOwner | None:
        async with await psycopg.AsyncConnection.connect(postgres_server.url) as conn:
            return await tenants.find_key_owner(conn, key_hash)

    keys = KeyCache(lookup)

    @get("/forgotten")
    async def forgotten(request: Request[Any, Any, Any]) -> str:
        await authenticate(request, keys, 1)
        return "open"

    app = Litestar([forgotten], exception_handlers=exception_handlers)
    full = keys_by_scope(postgres_server.url)["admin"]
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answer = client.get("/forgotten", headers={"X-API-Key": full})
    assert answer.status_code == 500
    assert answer.json()["code"] == "scope_undeclared"


def test_keys_made_before_scopes_keep_full_access_and_new_ones_get_ingest(
    postgres_server: Server, tmp_path: Path
) -> None:
    database = "scopes_" + ulid().lower()
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    url = postgres_server.url.rsplit("/", 1)[0] + "/" + database
    before = tmp_path / "before"
    before.mkdir()
    for migration in available_migrations():
        if migration.version < "0006":
            (before / migration.filename).write_text(migration.sql)
    migrate(url, before)
    old_key = generate_key("live")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO projects (project_id, name) VALUES ('prj_old', 'old')")
        conn.execute(
            "INSERT INTO api_keys (key_id, project_id, environment, key_hash, display_prefix)"
            " VALUES ('key_old', 'prj_old', 'live', %s, 'bq_live_x')",
            (hash_key(old_key),),
        )
    assert "0006_key_scopes" in migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        # A key inserted without naming scopes, as an older tool would: ingest only.
        conn.execute(
            "INSERT INTO api_keys (key_id, project_id, environment, key_hash, display_prefix)"
            " VALUES ('key_new', 'prj_old', 'live', %s, 'bq_live_y')",
            (hash_key(generate_key("live")),),
        )

    async def scopes() -> dict[str, tuple[str, ...]]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return {k.key_id: k.scopes for k in await tenants.list_keys(conn, "prj_old")}

    assert asyncio.run(scopes()) == {
        "key_old": ("ingest", "read", "write", "admin"),
        "key_new": ("ingest",),
    }
    shutil.rmtree(before)


def test_admin_tool_chooses_scopes_defaults_to_ingest_and_lists_them(
    postgres_server: Server,
) -> None:
    url = postgres_server.url
    code, created = admin(url, "project", "create", "Scoped Co " + ulid(), "--with-keys")
    assert code == 0
    assert created["keys"]["live"]["scopes"] == ["ingest"]
    project_id = created["project"]["project_id"]
    code, minted = admin(
        url, "key", "create", "--project", project_id, "--env", "live", "--scopes", "read,ingest"
    )
    assert code == 0 and minted["key"]["scopes"] == ["ingest", "read"]
    code, default = admin(url, "key", "create", "--project", project_id, "--env", "test")
    assert code == 0 and default["key"]["scopes"] == ["ingest"]
    code, listing = admin(url, "key", "list", "--project", project_id)
    assert [k["scopes"] for k in listing["keys"]] == [
        ["ingest"],
        ["ingest"],
        ["ingest", "read"],
        ["ingest"],
    ]
    human = [sys.executable, "-m", "bricqs.admin", "--database-url", url]
    shown = subprocess.run(
        [*human, "key", "list", "--project", project_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "ingest,read" in shown
    code, created = admin(
        url, "project", "create", "Full Co " + ulid(), "--with-keys", "--scopes", "admin,write"
    )
    assert code == 0 and created["keys"]["test"]["scopes"] == ["write", "admin"]


def test_a_key_without_ingest_cannot_send_a_plain_event_even_once_its_key_is_cached(
    sync_ingest: TestClient[Any], postgres_server: Server, redis_client: Any
) -> None:
    # The first request caches the key's owner; the second is the fast path's plain case.
    key = keys_by_scope(postgres_server.url)["read"]
    event = {"event_name": "page_viewed", "participant_id": "u1", "properties": {}}
    queued = redis_client.xlen(stream_key(0))
    answers = [
        sync_ingest.post("/api/v1/ingest/events", headers={"X-API-Key": key}, json=event)
        for _ in range(2)
    ]
    assert [(a.status_code, a.json()["code"]) for a in answers] == [(403, "insufficient_scope")] * 2
    assert redis_client.xlen(stream_key(0)) == queued
