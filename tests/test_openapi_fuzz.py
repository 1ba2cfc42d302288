"""schemathesis against the OpenAPI documents of ingest and api, served by Granian:
no server error, and every answer conforms to the document (status, content type, body)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig

from bricqs_devstack.servers import Server
from tests.conftest import Tenant, make_tenant
from tests.ingest.helpers import granian_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_tenant(postgres_server: Server) -> Tenant:
    return make_tenant(postgres_server.url, "fuzz")


def _schema(base: str) -> Any:
    config = SchemathesisConfig()
    return schemathesis.openapi.from_url(f"{base}/schema/openapi.json", config=config)


@pytest.fixture(scope="module")
def ingest_schema(redis_server: Server, postgres_server: Server) -> Iterator[Any]:
    with granian_app("bricqs_ingest.app:create_app", redis_server.url, postgres_server.url) as base:
        yield _schema(base)


@pytest.fixture(scope="module")
def api_schema(redis_server: Server, postgres_server: Server) -> Iterator[Any]:
    with granian_app("bricqs_api.app:create_app", redis_server.url, postgres_server.url) as base:
        yield _schema(base)


SETTINGS = hypothesis.settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


def fuzz(schema: Any, key: str) -> list[str]:
    """Run every operation's generated cases; return the operations exercised.

    Every other check applies (no 5xx; status codes, content types, bodies and headers as
    documented). Schema-valid bodies may still be refused: some rules (ISO dates, nesting
    depth, NUL characters, a body key matching the Idempotency-Key header, unknown badge
    codes) are beyond what the document can say, so that check is left out.
    """
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @SETTINGS
        @hypothesis.given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(
                headers={"X-API-Key": key}, timeout=10, excluded_checks=[positive_data_acceptance]
            )

        check()
        exercised.append(operation.label)
    return exercised


def test_ingest_conforms_to_its_document(ingest_schema: Any, fuzz_tenant: Tenant) -> None:
    assert len(fuzz(ingest_schema, fuzz_tenant.live_key)) == 3


def test_api_conforms_to_its_document(api_schema: Any, fuzz_tenant: Tenant) -> None:
    assert len(fuzz(api_schema, fuzz_tenant.live_key)) >= 40
