"""The security review, made executable: tenants never meet through any api route, keys
never reach the logs, bodies are bounded everywhere, and no HTTP route mints keys."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from bricqs_devstack.servers import Server
from tests.conftest import Story, Tenant, make_tenant
from tests.ingest.helpers import granian_app

pytestmark = pytest.mark.slow
SECRET = "zz-secret-marker"


def populate(story: Story) -> None:
    """Data of every kind for one tenant, each carrying SECRET somewhere visible."""
    trigger = {"fact_type": "custom.buy"}
    story.define(
        "points-rules", {"code": "pts", "name": SECRET, "trigger": trigger, "amount": {"fixed": 5}}
    )
    story.define(
        "badges",
        {"code": "bdg", "name": SECRET, "criteria": [{"criterion": trigger, "threshold": 1}]},
    )
    story.define(
        "challenges",
        {
            "code": "chl",
            "name": SECRET,
            "objectives": [{"code": "o", "criterion": trigger, "target": 1}],
        },
    )
    story.define("streaks", {"code": "stk", "name": SECRET, "trigger": trigger})
    story.define("leaderboards", {"code": "ldr", "name": SECRET})
    story.define(
        "tiers",
        {
            "code": "tir",
            "name": SECRET,
            "levels": [
                {"code": "a", "name": SECRET, "min_points": 0},
                {"code": "b", "name": "B", "min_points": 1},
            ],
        },
    )
    story.send("buy", "victim", {"note": SECRET})
    story.api.post(
        "/api/v1/gamify/points/award",
        headers=story.headers,
        json={"participant_id": "victim", "amount": 7, "reason": SECRET},
    )


def test_no_api_route_shows_one_tenants_data_to_another(
    story: Story, api: TestClient[Any], postgres_server: Server, tenant: Tenant
) -> None:
    populate(story)
    intruders = {
        "other project": make_tenant(postgres_server.url, "intruder").live_key,
        "same project, test environment": tenant.test_key,
    }
    document = api.get("/schema/openapi.json").json()
    values = {"participant_id": "victim", "code": "pts"}
    reads = [path for path, ops in document["paths"].items() if "get" in ops]
    assert len(reads) >= 14
    for who, key in intruders.items():
        for template in reads:
            path = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), template)
            if "/leaderboards/" in template:
                path = path.replace("/pts", "/ldr")
            for code in ("pts", "bdg", "chl", "stk", "ldr", "tir"):
                answer = api.get(
                    path.replace("/pts", f"/{code}")
                    if "{code}" in template and "/admin/" in template
                    else path,
                    headers={"X-API-Key": key},
                )
                assert SECRET not in answer.text, (who, path)
                assert '"balance":12' not in answer.text.replace(" ", ""), (who, path)
        # Writes land in the intruder's own scope: the victim's balance is untouched.
        api.post(
            "/api/v1/gamify/points/deduct",
            headers={"X-API-Key": key},
            json={"participant_id": "victim", "amount": 1},
        )
    assert story.get("/participants/victim/points")["balance"] == 12
    assert story.get("/admin/badges/bdg")["name"] == SECRET  # the owner still sees it all


def test_no_http_route_mints_or_lists_keys(api: TestClient[Any]) -> None:
    paths = api.get("/schema/openapi.json").json()["paths"]
    assert not [p for p in paths if "key" in p.lower()]


def test_request_bodies_are_bounded_on_the_api(api: TestClient[Any], tenant: Tenant) -> None:
    body = b'{"participant_id": "p", "amount": 1, "reason": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    answer = api.post(
        "/api/v1/gamify/points/award", headers={"X-API-Key": tenant.live_key}, content=body
    )
    assert (answer.status_code, answer.json()["code"]) == (413, "payload_too_large")


def test_keys_never_appear_in_the_logs(
    redis_server: Server, postgres_server: Server, tenant: Tenant, tmp_path: Path
) -> None:
    """Both HTTP services at DEBUG, with access logs on, fed good, bad and revoked keys."""
    bad_key = "bq_live_" + "Q" * 40
    logs: list[Path] = []
    for target in ("bricqs_ingest.app:create_app", "bricqs_api.app:create_app"):
        logs.append(tmp_path / f"{target.split('.')[0]}.log")
        with granian_app(
            target,
            redis_server.url,
            postgres_server.url,
            access_log=True,
            log_path=logs[-1],
            LOG_LEVEL="DEBUG",
        ) as base:
            for key in (tenant.live_key, bad_key, tenant.test_key + "x"):
                headers = {"X-API-Key": key, "Idempotency-Key": "k1"}
                httpx.post(
                    f"{base}/api/v1/ingest/events",
                    headers=headers,
                    json={"event_name": "e", "participant_id": "p"},
                    timeout=10,
                )
                httpx.post(
                    f"{base}/api/v1/ingest/events/sync", headers=headers, content=b"{", timeout=10
                )
                httpx.get(f"{base}/api/v1/gamify/participants/p/state", headers=headers, timeout=10)
                httpx.get(
                    f"{base}/api/v1/gamify/participants/p/state?key={key}",
                    headers=headers,
                    timeout=10,
                )
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert "api/v1" in text  # the access logs did record the requests
    for key in (tenant.live_key, bad_key, tenant.test_key):
        assert key[8:] not in text, "an API key (or its secret part) reached the logs"
