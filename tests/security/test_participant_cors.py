"""CORS for participant-token routes: per project, off by default; a preflight from an
allowed origin succeeds, from another origin it is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from bricqs.storage.tenants import projects_by_origin
from bricqs.web.cors import ProjectOrigins
from bricqs_devstack.servers import Server
from tests.conftest import Tenant, make_tenant
from tests.lib.test_storage import admin
from tests.security.test_participant_tokens import EVENT, bearer, mint

ALLOWED = "https://app.example"
STATE = "/api/v1/gamify/participants/u1/state"
EVENTS = "/api/v1/ingest/events"


def preflight(client: TestClient[Any], path: str, origin: str, method: str) -> Any:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


@pytest.fixture
def allowing(postgres_server: Server, tenant: Tenant) -> Tenant:
    code, _ = admin(postgres_server.url, "project", "cors", tenant.project_id, "--origins", ALLOWED)
    assert code == 0
    return tenant


def test_no_origin_is_allowed_by_default(api: TestClient[Any], tenant: Tenant) -> None:
    answer = preflight(api, STATE, ALLOWED, "GET")
    assert answer.status_code == 403
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize(
    ("service", "path", "method"), [("api", STATE, "GET"), ("sync_ingest", EVENTS, "POST")]
)
def test_a_preflight_from_an_allowed_origin_succeeds_and_from_another_is_refused(
    service: str, path: str, method: str, request: pytest.FixtureRequest, allowing: Tenant
) -> None:
    client: TestClient[Any] = request.getfixturevalue(service)
    allowed = preflight(client, path, ALLOWED, method)
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert method in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"]
    other = preflight(client, path, "https://evil.example", method)
    assert other.status_code == 403
    assert "access-control-allow-origin" not in other.headers


def test_only_participant_token_routes_and_methods_are_open_to_browsers(
    api: TestClient[Any], allowing: Tenant
) -> None:
    refused = [
        preflight(api, "/api/v1/gamify/participants/u1", ALLOWED, "PATCH"),
        preflight(api, "/api/v1/gamify/points/award", ALLOWED, "POST"),
        preflight(api, "/api/v1/gamify/admin/badges", ALLOWED, "GET"),
        preflight(api, STATE, ALLOWED, "DELETE"),
    ]
    assert [r.status_code for r in refused] == [403] * 4


def test_answers_name_the_origin_only_for_a_token_of_a_project_that_allows_it(
    api: TestClient[Any],
    sync_ingest: TestClient[Any],
    allowing: Tenant,
    postgres_server: Server,
) -> None:
    token = mint(api, allowing.live_key)
    read = api.get(STATE, headers={**bearer(token), "Origin": ALLOWED})
    assert read.status_code == 200
    assert read.headers["access-control-allow-origin"] == ALLOWED
    sent = sync_ingest.post(EVENTS, headers={**bearer(token), "Origin": ALLOWED}, json=EVENT)
    assert sent.status_code == 202
    assert sent.headers["access-control-allow-origin"] == ALLOWED
    # Another project's token, from the first project's origin: no CORS grant.
    stranger = make_tenant(postgres_server.url, "no origins")
    foreign = api.get(STATE, headers={**bearer(mint(api, stranger.live_key)), "Origin": ALLOWED})
    assert foreign.status_code == 200
    assert "access-control-allow-origin" not in foreign.headers
    evil = api.get(STATE, headers={**bearer(token), "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in evil.headers


def test_cleared_origins_are_refused_once_the_cached_ones_expire(
    postgres_server: Server, allowing: Tenant
) -> None:
    code, answer = admin(
        postgres_server.url, "project", "cors", allowing.project_id, "--origins", ""
    )
    assert (code, answer["cors_origins"]) == (0, [])

    async def lookup() -> dict[str, frozenset[str]]:
        async with await psycopg.AsyncConnection.connect(postgres_server.url) as conn:
            return await projects_by_origin(conn)

    now = [0.0]
    seen = {ALLOWED: frozenset({allowing.project_id})}

    async def stale_then_fresh() -> dict[str, frozenset[str]]:
        return seen if now[0] < 30 else await lookup()

    origins = ProjectOrigins(stale_then_fresh, ttl=30, clock=lambda: now[0])

    async def allowed() -> frozenset[str]:
        return await origins.projects_allowing(ALLOWED)

    assert asyncio.run(allowed()) == {allowing.project_id}
    now[0] = 29.0
    assert asyncio.run(allowed()) == {allowing.project_id}  # still the cached answer
    now[0] = 30.0
    assert allowing.project_id not in asyncio.run(allowed())
