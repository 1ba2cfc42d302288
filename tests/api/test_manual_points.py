"""Manual points through the api: an idempotency key names one request, whatever the timing.

A repeat of the same request answers the first result; the same key with another
participant, amount or reason is 409 `idempotency_conflict`; and every balance equals the
sum of its ledger rows, also when two requests race on one key.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from bricqs_devstack.servers import Server
from tests.conftest import Tenant
from tests.processes import wait_until

AWARD = "/api/v1/gamify/points/award"
DEDUCT = "/api/v1/gamify/points/deduct"


def balance_and_ledger(url: str, project_id: str, participant: str) -> tuple[int, int]:
    """(stored balance, sum of the participant's ledger rows)."""
    with psycopg.connect(url) as conn:
        balance = conn.execute(
            "SELECT coalesce(sum(balance), 0) FROM points_balances"
            " WHERE project_id = %s AND participant_id = %s",
            (project_id, participant),
        ).fetchone()
        ledger = conn.execute(
            "SELECT coalesce(sum(amount), 0) FROM points_ledger"
            " WHERE project_id = %s AND participant_id = %s",
            (project_id, participant),
        ).fetchone()
    assert balance is not None and ledger is not None
    return int(balance[0]), int(ledger[0])


def test_the_same_request_again_answers_the_first_result(
    api: TestClient[Any], tenant: Tenant
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    body = {"participant_id": "ann", "amount": 40, "reason": "welcome", "idempotency_key": "k1"}
    first = api.post(AWARD, headers=headers, json=body)
    again = api.post(AWARD, headers=headers, json=body)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["duplicate"] is False
    assert again.json() == {**first.json(), "duplicate": True}
    points = api.get("/api/v1/gamify/participants/ann/points", headers=headers).json()
    assert points["balance"] == 40


@pytest.mark.parametrize("path", [AWARD, DEDUCT])
def test_a_reason_holding_nul_is_refused_as_invalid_not_a_server_error(
    api: TestClient[Any], tenant: Tenant, path: str
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    body = {"participant_id": "ann", "amount": 5, "reason": "a\x00b"}
    answer = api.post(path, headers=headers, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "validation_failed"
    assert api.get("/api/v1/gamify/participants/ann/points", headers=headers).json()["balance"] == 0


@pytest.mark.parametrize(
    ("path", "change"),
    [
        (AWARD, {"participant_id": "bob"}),
        (AWARD, {"amount": 41}),
        (AWARD, {"reason": "another reason"}),
        (DEDUCT, {}),
    ],
    ids=["other-participant", "other-amount", "other-reason", "deduct-instead"],
)
def test_the_same_key_with_another_request_is_409_idempotency_conflict(
    api: TestClient[Any], tenant: Tenant, postgres_server: Server, path: str, change: dict[str, Any]
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    body = {"participant_id": "ann", "amount": 40, "reason": "welcome", "idempotency_key": "k1"}
    assert api.post(AWARD, headers=headers, json=body).status_code == 200
    conflicting = api.post(path, headers=headers, json={**body, **change})
    assert conflicting.status_code == 409, conflicting.text
    assert conflicting.json()["code"] == "idempotency_conflict"
    for participant, expected in (("ann", 40), ("bob", 0)):
        stored = balance_and_ledger(postgres_server.url, tenant.project_id, participant)
        assert stored == (expected, expected)


def test_a_key_in_the_header_conflicts_like_one_in_the_body(
    api: TestClient[Any], tenant: Tenant
) -> None:
    headers = {"X-API-Key": tenant.live_key, "Idempotency-Key": "hk"}
    first = api.post(AWARD, headers=headers, json={"participant_id": "ann", "amount": 5})
    other = api.post(AWARD, headers=headers, json={"participant_id": "ann", "amount": 6})
    assert first.status_code == 200
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict")


def waiting_on_locks(url: str, project_marker: str) -> int:
    """How many backends wait for a lock while inserting a ledger row."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE %s",
            (f"%{project_marker}%",),
        ).fetchone()
    return int(row[0]) if row else 0


def test_two_concurrent_awards_on_one_key_credit_one_balance_with_its_ledger_row(
    api: TestClient[Any], tenant: Tenant, postgres_server: Server
) -> None:
    """Both requests pass their look-up of the key before either writes: an uncommitted
    ledger row holding the key stops both at their insert until it rolls back, then they
    race for the key. One wins; the other must not credit a balance without a ledger row."""
    url = postgres_server.url
    headers = {"X-API-Key": tenant.live_key}
    with psycopg.connect(url) as gate:
        gate.execute(
            "INSERT INTO points_ledger (project_id, environment, entry_id, participant_id,"
            " amount, kind, source, occurred_at, reason, idempotency_key)"
            " VALUES (%s, 'live', 'pts_gate', 'gate', 1, 'award', 'manual', now(), '', 'race')",
            (tenant.project_id,),
        )

        def award(participant: str) -> Any:
            body = {"participant_id": participant, "amount": 7, "idempotency_key": "race"}
            return api.post(AWARD, headers=headers, json=body)

        with ThreadPoolExecutor(2) as pool:
            answers = [pool.submit(award, p) for p in ("ann", "bob")]
            wait_until(
                lambda: waiting_on_locks(url, "INSERT INTO points_ledger") >= 2,
                10,
                "both awards to wait at their ledger insert",
            )
            gate.rollback()
            responses = [a.result(timeout=30) for a in answers]
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409], [r.text for r in responses]
    winner = next(r.json() for r in responses if r.status_code == 200)
    loser = next(r.json() for r in responses if r.status_code == 409)
    assert loser["code"] == "idempotency_conflict"
    for participant in ("ann", "bob"):
        balance, ledger = balance_and_ledger(url, tenant.project_id, participant)
        assert balance == ledger == (7 if participant == winner["participant_id"] else 0)


def test_a_badge_code_postgresql_cannot_hold_is_422_not_500(
    api: TestClient[Any], tenant: Tenant
) -> None:
    # Found by the OpenAPI fuzz test: a NUL in the badge code reached PostgreSQL (500).
    answer = api.post(
        "/api/v1/gamify/badges/award",
        headers={"X-API-Key": tenant.live_key},
        json={"participant_id": "u1", "badge_code": "a\u0000b"},
    )
    assert answer.status_code == 422
    assert answer.json()["code"] == "validation_failed"
