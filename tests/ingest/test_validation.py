"""Every validation rule of SPEC §3, with its error code and field path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.conftest import Tenant
from tests.ingest.helpers import BATCH, EVENTS, SYNC

VALID = {"event_name": "purchase_completed", "participant_id": "user_123"}


def nested(depth: int) -> dict[str, Any]:
    """A properties object whose containers nest `depth` levels (itself included)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"child": value}
    return value


INVALID_EVENTS = [
    # (what is wrong, the event, field, code)
    ("no event_name", {"participant_id": "u"}, "event_name", "required"),
    ("null event_name", {**VALID, "event_name": None}, "event_name", "required"),
    ("numeric event_name", {**VALID, "event_name": 5}, "event_name", "invalid_type"),
    ("empty event_name", {**VALID, "event_name": ""}, "event_name", "too_short"),
    ("event_name of 101", {**VALID, "event_name": "a" * 101}, "event_name", "too_long"),
    ("event_name starts with _", {**VALID, "event_name": "_x"}, "event_name", "invalid_format"),
    ("event_name with space", {**VALID, "event_name": "a b"}, "event_name", "invalid_format"),
    ("event_name with slash", {**VALID, "event_name": "a/b"}, "event_name", "invalid_format"),
    ("no participant_id", {"event_name": "e"}, "participant_id", "required"),
    ("list participant_id", {**VALID, "participant_id": ["u"]}, "participant_id", "invalid_type"),
    ("empty participant_id", {**VALID, "participant_id": ""}, "participant_id", "too_short"),
    ("participant_id of 256", {**VALID, "participant_id": "p" * 256}, "participant_id", "too_long"),
    (
        "newline in participant",
        {**VALID, "participant_id": "a\nb"},
        "participant_id",
        "invalid_character",
    ),
    (
        "NUL in participant",
        {**VALID, "participant_id": "a\x00b"},
        "participant_id",
        "invalid_character",
    ),
    (
        "DEL in participant",
        {**VALID, "participant_id": "a\x7fb"},
        "participant_id",
        "invalid_character",
    ),
    ("properties a list", {**VALID, "properties": [1]}, "properties", "invalid_type"),
    ("properties a string", {**VALID, "properties": "x"}, "properties", "invalid_type"),
    ("properties 11 deep", {**VALID, "properties": nested(11)}, "properties", "too_deep"),
    (
        "properties list 11 deep",
        {**VALID, "properties": {"a": [[[[[[[[[[1]]]]]]]]]]}},
        "properties",
        "too_deep",
    ),
    (
        "NUL in a property",
        {**VALID, "properties": {"a": "x\x00"}},
        "properties",
        "invalid_character",
    ),
    (
        "integer beyond 64 bits",
        {**VALID, "properties": {"a": 2**64}},
        "properties",
        "number_out_of_range",
    ),
    ("timestamp a number", {**VALID, "timestamp": 1707900600}, "timestamp", "invalid_type"),
    ("timestamp not a date", {**VALID, "timestamp": "yesterday"}, "timestamp", "invalid_format"),
    ("timestamp 2 h ahead", {**VALID, "timestamp": "FUTURE_2H"}, "timestamp", "in_future"),
    ("key with space", {**VALID, "idempotency_key": "a b"}, "idempotency_key", "invalid_format"),
    ("key of 256", {**VALID, "idempotency_key": "k" * 256}, "idempotency_key", "invalid_format"),
    ("key a number", {**VALID, "idempotency_key": 7}, "idempotency_key", "invalid_format"),
    ("empty key", {**VALID, "idempotency_key": ""}, "idempotency_key", "invalid_format"),
]


def _materialise(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("timestamp") == "FUTURE_2H":
        return {**event, "timestamp": (datetime.now(UTC) + timedelta(hours=2)).isoformat()}
    return event


@pytest.mark.parametrize("path", [EVENTS, SYNC])
@pytest.mark.parametrize(
    ("case", "event", "field", "code"), INVALID_EVENTS, ids=[c[0] for c in INVALID_EVENTS]
)
def test_invalid_event_is_refused_with_422_naming_field_and_code(
    ingest: TestClient[Any],
    tenant: Tenant,
    path: str,
    case: str,
    event: dict[str, Any],
    field: str,
    code: str,
) -> None:
    response = ingest.post(path, headers={"X-API-Key": tenant.live_key}, json=_materialise(event))
    assert response.status_code == 422, case
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "validation_failed"
    assert body["status"] == 422
    assert {"field": field, "code": code} in [
        {"field": e["field"], "code": e["code"]} for e in body["errors"]
    ]


@pytest.mark.parametrize(
    ("case", "event", "field", "code"), INVALID_EVENTS, ids=[c[0] for c in INVALID_EVENTS]
)
def test_invalid_event_in_a_batch_is_rejected_with_an_indexed_field_path(
    ingest: TestClient[Any],
    tenant: Tenant,
    case: str,
    event: dict[str, Any],
    field: str,
    code: str,
) -> None:
    response = ingest.post(
        BATCH,
        headers={"X-API-Key": tenant.live_key},
        json={"events": [VALID, _materialise(event)]},
    )
    assert response.status_code == 202, case
    result = response.json()["results"][1]
    assert result["status"] == "rejected"
    assert {"field": f"events[1].{field}", "code": code} in [
        {"field": e["field"], "code": e["code"]} for e in result["error"]["errors"]
    ]


def test_all_problems_of_an_event_are_reported_together(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    response = ingest.post(
        EVENTS,
        headers={"X-API-Key": tenant.live_key},
        json={"event_name": "", "participant_id": 3, "properties": [], "timestamp": "x"},
    )
    fields = sorted(e["field"] for e in response.json()["errors"])
    assert fields == ["event_name", "participant_id", "properties", "timestamp"]


VALID_EDGES = [
    ("event_name of 100", {**VALID, "event_name": "a" * 100}),
    ("event_name of 1 digit", {**VALID, "event_name": "7"}),
    ("event_name with all punctuation", {**VALID, "event_name": "a_b.c:d-e"}),
    ("participant_id of 255", {**VALID, "participant_id": "p" * 255}),
    ("participant_id unicode", {**VALID, "participant_id": "用户-ü"}),
    ("properties 10 deep", {**VALID, "properties": nested(10)}),
    ("properties null", {**VALID, "properties": None}),
    ("naive timestamp", {**VALID, "timestamp": "2026-04-10T10:30:00"}),
    ("offset timestamp", {**VALID, "timestamp": "2026-04-10T12:30:00+02:00"}),
    ("timestamp 59 min ahead", {**VALID, "timestamp": "FUTURE_59M"}),
    ("key of 255", {**VALID, "idempotency_key": "k" * 255}),
    ("key with punctuation", {**VALID, "idempotency_key": "a-b_c:d.e"}),
    ("unknown extra field", {**VALID, "context": {"ip": "1.2.3.4"}}),
    ("uint64 max", {**VALID, "properties": {"n": 2**64 - 1}}),
]


@pytest.mark.parametrize(("case", "event"), VALID_EDGES, ids=[c[0] for c in VALID_EDGES])
def test_values_at_the_edge_of_the_rules_are_accepted(
    ingest: TestClient[Any], tenant: Tenant, case: str, event: dict[str, Any]
) -> None:
    if event.get("timestamp") == "FUTURE_59M":
        event = {**event, "timestamp": (datetime.now(UTC) + timedelta(minutes=59)).isoformat()}
    response = ingest.post(EVENTS, headers={"X-API-Key": tenant.live_key}, json=event)
    assert response.status_code == 202, (case, response.text)


def test_naive_timestamp_is_taken_as_utc(ingest: TestClient[Any], tenant: Tenant, db: Any) -> None:
    response = ingest.post(
        SYNC,
        headers={"X-API-Key": tenant.live_key},
        json={**VALID, "timestamp": "2026-04-10T10:30:00"},
    )
    occurred = db.execute(
        "SELECT occurred_at FROM events WHERE project_id = %s AND event_id = %s",
        (tenant.project_id, response.json()["event_id"]),
    ).fetchone()[0]
    assert occurred == datetime(2026, 4, 10, 10, 30, tzinfo=UTC)


def test_missing_timestamp_defaults_to_receive_time(
    ingest: TestClient[Any], tenant: Tenant, db: Any
) -> None:
    before = datetime.now(UTC)
    response = ingest.post(SYNC, headers={"X-API-Key": tenant.live_key}, json=VALID)
    occurred, received = db.execute(
        "SELECT occurred_at, received_at FROM events WHERE project_id = %s AND event_id = %s",
        (tenant.project_id, response.json()["event_id"]),
    ).fetchone()
    assert occurred == received
    assert before - timedelta(seconds=1) <= occurred <= datetime.now(UTC)


BAD_BODIES = [
    # (what is wrong, raw body, status, code)
    ("malformed JSON", b'{"event_name": ', 400, "malformed_json"),
    ("trailing garbage", b'{"event_name": "a", "participant_id": "u"} x', 400, "malformed_json"),
    ("invalid UTF-8", b'{"event_name": "\xff\xfe", "participant_id": "u"}', 400, "malformed_json"),
    (
        "lone surrogate escape",
        b'{"event_name": "a", "participant_id": "\\ud800"}',
        400,
        "malformed_json",
    ),
    ("empty body", b"", 400, "empty_body"),
    ("JSON array", b"[1, 2]", 422, "validation_failed"),
    ("JSON string", b'"event"', 422, "validation_failed"),
    ("JSON null", b"null", 422, "validation_failed"),
    (
        "number out of range",
        b'{"event_name": "a", "participant_id": "u", "properties": {"x": 1e999}}',
        400,
        "malformed_json",
    ),
    ("100k nested arrays", b"[" * 100_000 + b"]" * 100_000, 413, "payload_too_large"),
    (
        "5k nested arrays",
        b'{"properties": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        400,
        "malformed_json",
    ),
]


@pytest.mark.parametrize("path", [EVENTS, SYNC, BATCH])
@pytest.mark.parametrize(
    ("case", "body", "status", "code"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
def test_bad_body_gets_a_clear_4xx(
    ingest: TestClient[Any],
    tenant: Tenant,
    path: str,
    case: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    response = ingest.post(
        path,
        headers={"X-API-Key": tenant.live_key, "Content-Type": "application/json"},
        content=body,
    )
    if path == BATCH and status == 422:
        status, code = 400, "invalid_batch"  # a batch body must be {"events": [...]}
    if path == BATCH and case == "100k nested arrays":
        status, code = 400, "malformed_json"  # 200 KB fits the batch limit; depth does not
    assert (response.status_code, response.json()["code"]) == (status, code), case


def test_single_event_body_over_the_limit_is_413(ingest: TestClient[Any], tenant: Tenant) -> None:
    event = {**VALID, "properties": {"blob": "x" * 70_000}}
    response = ingest.post(EVENTS, headers={"X-API-Key": tenant.live_key}, json=event)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_event_over_32_kib_in_a_loosely_formatted_body_is_refused(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    # 40 KB of body, under the 64 KiB body limit, but the event itself is over 32 KiB.
    body = json.dumps({**VALID, "properties": {"blob": "x" * 40_000}}).encode()
    response = ingest.post(EVENTS, headers={"X-API-Key": tenant.live_key}, content=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "too_large"


def test_pretty_printed_event_under_32_kib_is_accepted(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    # The body is over 32 KiB only because of white space; the event itself is small.
    body = json.dumps({**VALID, "properties": {"k": "v"}}, indent=8_000).encode()
    assert 32 * 1024 < len(body) < 64 * 1024
    response = ingest.post(EVENTS, headers={"X-API-Key": tenant.live_key}, content=body)
    assert response.status_code == 202


def test_malformed_idempotency_key_header_is_422(ingest: TestClient[Any], tenant: Tenant) -> None:
    response = ingest.post(
        EVENTS, headers={"X-API-Key": tenant.live_key, "Idempotency-Key": "has space"}, json=VALID
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


def test_body_key_that_differs_from_header_key_is_422(
    ingest: TestClient[Any], tenant: Tenant
) -> None:
    response = ingest.post(
        EVENTS,
        headers={"X-API-Key": tenant.live_key, "Idempotency-Key": "a"},
        json={**VALID, "idempotency_key": "b"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "idempotency_key_mismatch"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", EVENTS, 405, "method_not_allowed"),
        ("POST", "/api/v1/ingest/nothing", 404, "not_found"),
    ],
)
def test_unknown_routes_and_methods_get_problem_details(
    ingest: TestClient[Any], method: str, path: str, status: int, code: str
) -> None:
    response = ingest.request(method, path)
    assert response.status_code == status
    assert response.json()["code"] == code


def test_unknown_event_names_are_accepted_soft_validation(
    ingest: TestClient[Any], tenant: Tenant, db: Any
) -> None:
    response = ingest.post(
        SYNC,
        headers={"X-API-Key": tenant.live_key},
        json={"event_name": "never_declared_anywhere", "participant_id": "u"},
    )
    assert response.status_code == 200
    assert db.execute(
        "SELECT event_count FROM event_catalog WHERE project_id = %s AND event_name = %s",
        (tenant.project_id, "never_declared_anywhere"),
    ).fetchone() == (1,)
