"""Participant tokens: minted by a server key, they let a browser act for one participant
of one project and environment, until they expire or the secret changes."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from bricqs.participant_tokens import ParticipantTokens
from bricqs.stream import stream_key
from bricqs_devstack.servers import Server
from tests.conftest import PARTICIPANT_TOKEN_SECRET as SECRET
from tests.conftest import Tenant, make_tenant

EVENT = {"event_name": "page_viewed", "participant_id": "u1", "properties": {}}


def mint(api: TestClient[Any], key: str, participant: str = "u1", **extra: Any) -> str:
    answer = api.post(
        "/api/v1/gamify/auth/participant-token",
        headers={"X-API-Key": key},
        json={"participant_id": participant, **extra},
    )
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_unit_token_is_valid_until_its_expiry_and_not_a_second_longer() -> None:
    now = [1_000_000.0]
    tokens = ParticipantTokens("s", clock=lambda: now[0])
    token, grant = tokens.mint("prj_a", "live", "u1", ttl_seconds=900)
    assert grant.expires_at == 1_000_900
    now[0] = 1_000_899.0
    assert tokens.check(token) == grant
    now[0] = 1_000_900.0
    assert tokens.check(token) is None
    with pytest.raises(ValueError):
        tokens.mint("prj_a", "live", "u1", ttl_seconds=24 * 3600 + 1)


def test_a_token_reads_its_own_participant_and_nothing_else(
    api: TestClient[Any], tenant: Tenant
) -> None:
    token = mint(api, tenant.live_key)
    own = api.get("/api/v1/gamify/participants/u1/state", headers=bearer(token))
    assert own.status_code == 200 and own.json()["participant_id"] == "u1"
    other = api.get("/api/v1/gamify/participants/u2/points", headers=bearer(token))
    assert (other.status_code, other.json()["code"]) == (403, "participant_mismatch")
    rank = api.get("/api/v1/gamify/leaderboards/top/rank/u2", headers=bearer(token))
    assert (rank.status_code, rank.json()["code"]) == (403, "participant_mismatch")
    # Leaderboards are readable (here: no such board), everything else is not.
    board = api.get("/api/v1/gamify/leaderboards/top", headers=bearer(token))
    assert board.status_code == 404
    refused = [
        api.get("/api/v1/events/catalog", headers=bearer(token)),
        api.get("/api/v1/gamify/admin/badges", headers=bearer(token)),
        api.patch(
            "/api/v1/gamify/participants/u1", headers=bearer(token), json={"timezone": "UTC"}
        ),
        api.post(
            "/api/v1/gamify/points/award",
            headers=bearer(token),
            json={"participant_id": "u1", "amount": 5},
        ),
        api.post(
            "/api/v1/gamify/auth/participant-token",
            headers=bearer(token),
            json={"participant_id": "u1"},
        ),
    ]
    assert [(r.status_code, r.json()["code"]) for r in refused] == [(403, "insufficient_scope")] * 5


def test_a_token_sends_its_own_participants_events_only(
    sync_ingest: TestClient[Any], api: TestClient[Any], tenant: Tenant, redis_client: Any
) -> None:
    token = mint(api, tenant.live_key)
    queued = redis_client.xlen(stream_key(0))
    sent = sync_ingest.post("/api/v1/ingest/events", headers=bearer(token), json=EVENT)
    assert sent.status_code == 202, sent.text
    other = sync_ingest.post(
        "/api/v1/ingest/events", headers=bearer(token), json={**EVENT, "participant_id": "u2"}
    )
    assert (other.status_code, other.json()["code"]) == (403, "participant_mismatch")
    mixed = sync_ingest.post(
        "/api/v1/ingest/events/batch",
        headers=bearer(token),
        json={"events": [EVENT, {**EVENT, "participant_id": "u2"}]},
    )
    assert (mixed.status_code, mixed.json()["code"]) == (403, "participant_mismatch")
    synced = sync_ingest.post(
        "/api/v1/ingest/events/sync", headers=bearer(token), json={**EVENT, "participant_id": "u2"}
    )
    assert synced.status_code == 403
    assert redis_client.xlen(stream_key(0)) == queued + 1  # only the first event


def test_a_token_is_bound_to_its_project_and_environment(
    api: TestClient[Any], tenant: Tenant, postgres_server: Server
) -> None:
    award = api.post(
        "/api/v1/gamify/points/award",
        headers={"X-API-Key": tenant.live_key},
        json={"participant_id": "u1", "amount": 7},
    )
    assert award.status_code == 200
    other_project = make_tenant(postgres_server.url, "another project")
    balances = {
        name: api.get(
            "/api/v1/gamify/participants/u1/points", headers=bearer(mint(api, key))
        ).json()["balance"]
        for name, key in [
            ("live", tenant.live_key),
            ("test", tenant.test_key),
            ("other project", other_project.live_key),
        ]
    }
    assert balances == {"live": 7, "test": 0, "other project": 0}


def test_a_tampered_or_foreign_token_is_refused(
    api: TestClient[Any], sync_ingest: TestClient[Any], tenant: Tenant
) -> None:
    token = mint(api, tenant.live_key)
    body, _, signature = token.partition(".")
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    foreign, _ = ParticipantTokens("another secret").mint(tenant.project_id, "live", "u1")
    for bad in (f"{flipped}.{signature}", f"{body}.{signature[:-2]}", foreign, "bqp_x"):
        read = api.get("/api/v1/gamify/participants/u1/state", headers=bearer(bad))
        sent = sync_ingest.post("/api/v1/ingest/events", headers=bearer(bad), json=EVENT)
        assert (read.status_code, read.json()["code"]) == (401, "invalid_participant_token")
        assert (sent.status_code, sent.json()["code"]) == (401, "invalid_participant_token")


def test_a_token_expires_when_it_says(api: TestClient[Any], tenant: Tenant) -> None:
    answer = api.post(
        "/api/v1/gamify/auth/participant-token",
        headers={"X-API-Key": tenant.live_key},
        json={"participant_id": "u1", "expires_in": 60},
    )
    token, expires_at = answer.json()["token"], answer.json()["expires_at"]
    clients = api.app.state.clients
    clients.tokens = ParticipantTokens(SECRET, clock=lambda: expires_at - 1)
    still = api.get("/api/v1/gamify/participants/u1/state", headers=bearer(token))
    assert still.status_code == 200
    clients.tokens = ParticipantTokens(SECRET, clock=lambda: expires_at)
    expired = api.get("/api/v1/gamify/participants/u1/state", headers=bearer(token))
    assert (expired.status_code, expired.json()["code"]) == (401, "invalid_participant_token")


def test_expiry_defaults_to_15_minutes_and_is_at_most_a_day(
    api: TestClient[Any], tenant: Tenant
) -> None:
    url = "/api/v1/gamify/auth/participant-token"
    headers = {"X-API-Key": tenant.live_key}
    default = api.post(url, headers=headers, json={"participant_id": "u1"}).json()
    assert default["expires_in"] == 900
    day = api.post(url, headers=headers, json={"participant_id": "u1", "expires_in": 86400})
    assert day.status_code == 201
    longer = api.post(url, headers=headers, json={"participant_id": "u1", "expires_in": 86401})
    assert longer.status_code == 422


def test_rotating_the_secret_invalidates_every_token_at_once(
    redis_server: Server, postgres_server: Server, api: TestClient[Any], tenant: Tenant
) -> None:
    from bricqs_api.app import create_app
    from bricqs_api.settings import ApiSettings

    tokens = [mint(api, tenant.live_key, p) for p in ("u1", "u2")]
    path = "/api/v1/gamify/participants/{}/state"
    assert [
        api.get(path.format(p), headers=bearer(t)).status_code
        for p, t in zip(("u1", "u2"), tokens, strict=True)
    ] == [200, 200]
    rotated = ApiSettings(
        redis_url=redis_server.url,
        database_url=postgres_server.url,
        log_level="WARNING",
        participant_token_secret="the next secret",
    )
    with TestClient(create_app(rotated), base_url="http://127.0.0.1") as restarted:
        assert [
            restarted.get(path.format(p), headers=bearer(t)).status_code
            for p, t in zip(("u1", "u2"), tokens, strict=True)
        ] == [401, 401]
        assert (
            restarted.get(
                path.format("u1"), headers=bearer(mint(restarted, tenant.live_key))
            ).status_code
            == 200
        )


def test_tokens_of_two_projects_for_one_participant_id_draw_on_two_buckets(
    redis_server: Server, postgres_server: Server, redis_client: Any, api: TestClient[Any]
) -> None:
    from bricqs_ingest.app import create_app
    from tests.ingest.conftest import ingest_settings

    settings = ingest_settings(
        redis_server.url,
        postgres_server.url,
        participant_token_secret=SECRET,
        rate_limit_per_second=0.001,
        rate_limit_burst=100,
    )
    first, second = (make_tenant(postgres_server.url, name) for name in ("first", "second"))
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as limited:
        drained = limited.post(
            "/api/v1/ingest/events/batch",
            headers=bearer(mint(api, first.live_key)),
            json={"events": [EVENT] * 100},
        )
        assert drained.status_code == 202
        again = limited.post(
            "/api/v1/ingest/events", headers=bearer(mint(api, first.live_key)), json=EVENT
        )
        assert again.status_code == 429  # the first project's u1 has used its burst
        other = limited.post(
            "/api/v1/ingest/events", headers=bearer(mint(api, second.live_key)), json=EVENT
        )
        assert other.status_code == 202, other.text
