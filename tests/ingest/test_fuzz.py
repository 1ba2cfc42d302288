"""Property-based: arbitrary JSON (and arbitrary bytes) at all three endpoints never
gets a 5xx, and every answer is either success or a problem document with a code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from bricqs_devstack.servers import Server
from bricqs_ingest.app import create_app
from tests.conftest import Tenant, make_tenant
from tests.ingest.conftest import ingest_settings
from tests.ingest.helpers import BATCH, EVENTS, SYNC

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Events that are nearly right reach deeper into validation than random documents do.
near_events = st.fixed_dictionaries(
    {},
    optional={
        "event_name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,5}", fullmatch=True)
        | json_values,
        "participant_id": st.text(min_size=1, max_size=10) | json_values,
        "properties": st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values,
        "timestamp": st.datetimes().map(lambda d: d.isoformat())
        | st.text(max_size=30)
        | json_values,
        "idempotency_key": st.from_regex(r"[A-Za-z0-9_\-:.]{1,10}", fullmatch=True) | json_values,
    },
)
bodies = (
    near_events
    | json_values
    | st.fixed_dictionaries({"events": st.lists(near_events | json_values, max_size=5)})
)


@pytest.fixture(scope="module")
def client_and_tenant(
    redis_server: Server, postgres_server: Server
) -> Iterator[tuple[TestClient[Any], Tenant]]:
    app = create_app(ingest_settings(redis_server.url, postgres_server.url))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, make_tenant(postgres_server.url, "fuzz")


def check_answer(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code == 422 and "results" in response.json():
        return  # a batch whose every event was rejected answers with the batch body
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        assert isinstance(response.json()["code"], str)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, path=st.sampled_from([EVENTS, BATCH, SYNC]))
def test_arbitrary_json_never_gets_a_server_error(
    client_and_tenant: tuple[TestClient[Any], Tenant], body: Any, path: str
) -> None:
    client, tenant = client_and_tenant
    response = client.post(
        path, headers={"X-API-Key": tenant.live_key}, content=msgspec.json.encode(body)
    )
    check_answer(response)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=200),
    path=st.sampled_from([EVENTS, BATCH, SYNC]),
    key=st.text(max_size=50).filter(lambda k: k.isascii() and k.isprintable()),
)
def test_arbitrary_bytes_and_keys_never_get_a_server_error(
    client_and_tenant: tuple[TestClient[Any], Tenant], body: bytes, path: str, key: str
) -> None:
    client, tenant = client_and_tenant
    response = client.post(path, headers={"X-API-Key": key or tenant.live_key}, content=body)
    check_answer(response)
