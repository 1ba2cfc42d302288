"""The shared problem mapping (both HTTP services use it): a statement timeout is an
overloaded database, not an outage."""

from __future__ import annotations

from typing import Any

import psycopg
from litestar import Litestar, get
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from bricqs.web.problems import exception_handlers
from bricqs_devstack.servers import Server


def overloaded_count() -> float:
    return REGISTRY.get_sample_value("bricqs_database_overloaded_total") or 0.0


def test_a_statement_timeout_is_503_database_overloaded_with_a_jittered_retry_after(
    postgres_server: Server,
) -> None:
    @get("/slow")
    async def slow() -> None:
        async with await psycopg.AsyncConnection.connect(
            postgres_server.url, options="-c statement_timeout=50"
        ) as conn:
            await conn.execute("SELECT pg_sleep(5)")

    before = overloaded_count()
    app = Litestar([slow], exception_handlers=exception_handlers)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answers = [client.get("/slow") for _ in range(3)]
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json()["code"] == "database_overloaded"
        assert 5 <= int(answer.headers["Retry-After"]) <= 15
    assert overloaded_count() == before + 3


def test_an_unreachable_database_is_still_503_database_unavailable(
    postgres_server: Server,
) -> None:
    @get("/down")
    async def down() -> None:
        await psycopg.AsyncConnection.connect("postgresql://nobody@127.0.0.1:1/none")

    app = Litestar([down], exception_handlers=exception_handlers)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answer: Any = client.get("/down")
    assert (answer.status_code, answer.json()["code"]) == (503, "database_unavailable")
    assert answer.headers["Retry-After"] == "1"
