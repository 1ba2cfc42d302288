"""The console's guards, without a browser: CSRF on every form, the session cookie's
flags and expiry, the CSP, scopes, and tenants kept apart (a test key sees test data
only; another project is never reachable)."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from bricqs_api.console.session import ConsoleSessions
from tests.conftest import Story, Tenant, make_tenant
from tests.console.conftest import form_token, set_key

RULE = {
    "code": "buy",
    "name": "Buy",
    "trigger": {"fact_type": "custom.purchase"},
    "amount": {"fixed": 10},
}


def sign_in(client: TestClient[Any], key: str) -> Any:
    """Sign the client in with `key`; the sign-in answer."""
    token = form_token(client.get("/console/sign-in").text)
    return client.post(
        "/console/sign-in", data={"api_key": key, "_csrf_token": token}, follow_redirects=False
    )


def test_the_session_cookie_is_signed_httponly_strict_and_expires(
    console_client: TestClient[Any], tenant: Tenant
) -> None:
    answer = sign_in(console_client, tenant.live_key)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("bricqs_console=")
    )
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/console", "max-age=28800"} <= flags
    assert tenant.live_key not in cookie  # only the key's hash, signed
    assert console_client.get("/console/", follow_redirects=False).status_code == 200


def test_a_form_posted_without_its_csrf_token_is_refused(
    console_client: TestClient[Any], tenant: Tenant
) -> None:
    refused = console_client.post(
        "/console/sign-in", data={"api_key": tenant.live_key}, follow_redirects=False
    )
    assert refused.status_code == 403 and "bricqs_console=" not in str(refused.headers)
    sign_in(console_client, tenant.live_key)
    award = {"direction": "award", "amount": "5", "confirmed": "yes"}
    for extra in ({}, {"_csrf_token": "forged"}):
        answer = console_client.post("/console/participants/p/points", data=award | extra)
        assert answer.status_code == 403 and "not sent from a console page" in answer.text
    token = form_token(console_client.get("/console/participants/p").text)
    answer = console_client.post(
        "/console/participants/p/points", data=award | {"_csrf_token": token}
    )
    assert answer.status_code == 200 and '<b id="balance">5</b>' in answer.text


def test_pages_carry_a_csp_without_inline_scripts(
    console_client: TestClient[Any], tenant: Tenant
) -> None:
    sign_in(console_client, tenant.live_key)
    for path in ("/console/sign-in", "/console/", "/console/participants/p"):
        policy = console_client.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_an_expired_or_tampered_session_is_no_session() -> None:
    now = [1_000_000.0]
    sessions = ConsoleSessions("secret", 3600, clock=lambda: now[0])
    value = sessions.issue(b"\x01" * 32)
    assert sessions.key_hash(value) == b"\x01" * 32
    assert ConsoleSessions("other secret", 3600).key_hash(value) is None
    assert sessions.key_hash(value[:-2] + "xx") is None
    now[0] += 3600
    assert sessions.key_hash(value) is None


def test_signed_out_revoked_or_unscoped_keys_are_refused(
    console_client: TestClient[Any], tenant: Tenant, postgres_server: Any
) -> None:
    for path in ("/console", "/console/", "/console/participants/p"):
        answer = console_client.get(path, follow_redirects=False)
        assert answer.headers["location"] == "/console/sign-in", path
    set_key(postgres_server.url, tenant.test_key_id, scopes="{ingest}")
    assert sign_in(console_client, tenant.test_key).status_code == 401  # ingest only
    set_key(postgres_server.url, tenant.live_key_id, revoke=True)
    refused = sign_in(console_client, tenant.live_key)
    assert refused.status_code == 401 and "unknown or revoked" in refused.text
    assert sign_in(console_client, "bq_live_" + "x" * 40).status_code == 401


def test_a_revoked_key_ends_its_sessions(
    console_client: TestClient[Any], tenant: Tenant, postgres_server: Any
) -> None:
    sign_in(console_client, tenant.live_key)
    assert console_client.get("/console/", follow_redirects=False).status_code == 200
    set_key(postgres_server.url, tenant.live_key_id, revoke=True)
    assert console_client.get("/console/", follow_redirects=False).status_code == 303
    token = form_token(console_client.get("/console/sign-in").text)
    answer = console_client.post(
        "/console/participants/p/points",
        data={"direction": "award", "amount": "5", "confirmed": "yes", "_csrf_token": token},
    )
    assert answer.status_code == 401


def test_sign_out_ends_the_session(console_client: TestClient[Any], tenant: Tenant) -> None:
    sign_in(console_client, tenant.live_key)
    token = form_token(console_client.get("/console/").text)
    out = console_client.post(
        "/console/sign-out", data={"_csrf_token": token}, follow_redirects=False
    )
    assert out.status_code == 303 and 'bricqs_console=""' in out.headers["set-cookie"]
    assert console_client.get("/console/", follow_redirects=False).status_code == 303


def test_a_read_key_reads_but_cannot_act(
    console_client: TestClient[Any], tenant: Tenant, postgres_server: Any
) -> None:
    set_key(postgres_server.url, tenant.live_key_id, scopes="{read}")
    sign_in(console_client, tenant.live_key)
    page = console_client.get("/console/participants/p").text
    assert "By hand" not in page
    token = form_token(page)
    for path, data in (
        ("/console/participants/p/points", {"direction": "award", "amount": "5"}),
        ("/console/definitions/points-rules", {"definition": "{}"}),
        ("/console/dead-letters/replay", {"entry_id": "all"}),
    ):
        answer = console_client.post(path, data=data | {"_csrf_token": token})
        assert answer.status_code == 403, path


def test_a_test_key_sees_test_data_only_and_no_other_project(
    console_client: TestClient[Any], story: Story, tenant: Tenant, postgres_server: Any
) -> None:
    story.define("points-rules", RULE)
    story.send("purchase", "shared-name")
    other = make_tenant(postgres_server.url, "other project")
    for key in (tenant.test_key, other.live_key):
        console_client.cookies.clear()
        sign_in(console_client, key)
        participant = console_client.get("/console/participants/shared-name").text
        assert '<b id="balance">0</b>' in participant and "custom.purchase" not in participant
        assert (
            "/console/definitions/points-rules/buy"
            not in console_client.get("/console/definitions").text
        )
        missing = console_client.get("/console/definitions/points-rules/buy")
        assert missing.status_code == 404 and "No points-rules definition" in missing.text
        assert ">purchase<" not in console_client.get("/console/events").text
        assert "None.</td>" in console_client.get("/console/events/purchase").text
    console_client.cookies.clear()
    sign_in(console_client, tenant.live_key)
    participant = console_client.get("/console/participants/shared-name").text
    assert '<b id="balance">10</b>' in participant


def test_the_console_is_off_without_a_session_secret(api: TestClient[Any]) -> None:
    assert api.get("/console/sign-in").status_code == 404
