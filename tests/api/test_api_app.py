"""The api app's wiring: readiness reaches the clients made in the lifespan."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient


def test_ready_checks_postgres_and_redis(api: TestClient[Any]) -> None:
    response = api.get("/health/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}
