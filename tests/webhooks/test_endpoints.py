"""Endpoints through the api: CRUD, the secret shown once, safe targets only, rotation
with both signatures during the overlap; and the dispatcher's own checks and fairness."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from standardwebhooks.webhooks import Webhook

from tests.conftest import Story, Tenant
from tests.processes import wait_until
from tests.webhooks.conftest import Scene, answer, subscribe
from tests.webhooks.test_delivery import award, message

ROOT = "/api/v1/gamify/admin/webhooks"


def test_endpoint_crud_shows_the_secret_only_at_creation(hooks: Story) -> None:
    created = subscribe(hooks, "http://127.0.0.1:9/crud", ["badge.awarded", "points.awarded"])
    assert created["secret"].startswith("whsec_")
    path = f"{ROOT}/{created['endpoint_id']}"
    shown = hooks.api.get(path, headers=hooks.headers).json()
    assert "secret" not in shown
    assert shown["event_types"] == ["badge.awarded", "points.awarded"]
    listed = hooks.api.get(ROOT, headers=hooks.headers).json()["items"]
    assert [e["endpoint_id"] for e in listed] == [created["endpoint_id"]]
    assert all("secret" not in e for e in listed)
    changed = hooks.api.patch(
        path, headers=hooks.headers, json={"event_types": ["*"], "enabled": False}
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["event_types"], changed.json()["enabled"]) == (["*"], False)
    assert hooks.api.delete(path, headers=hooks.headers).status_code == 204
    assert hooks.api.get(path, headers=hooks.headers).status_code == 404


def test_unknown_event_types_are_refused(hooks: Story) -> None:
    response = hooks.api.post(
        ROOT,
        headers=hooks.headers,
        json={"url": "http://127.0.0.1:9/x", "event_types": ["badge.stolen"]},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "event_types"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hook",
        "http://192.168.0.10/hook",
        "http://localhost/hook",
    ],
)
def test_private_targets_are_refused_unless_allowed(
    api: TestClient[Any], hooks: Story, tenant: Tenant, url: str
) -> None:
    refused = api.post(
        ROOT, headers={"X-API-Key": tenant.live_key}, json={"url": url, "event_types": ["*"]}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["code"] == "unsafe_url"
    # The same URL where private targets are allowed (WEBHOOKS_ALLOW_PRIVATE=true).
    assert subscribe(hooks, url)["url"] == url


def test_the_dispatcher_refuses_a_private_target_at_send_time(scene: Scene) -> None:
    endpoint = subscribe(scene.hooks, scene.receiver.on("/inside", answer(200)), ["points.awarded"])
    award(scene.hooks, "s1")
    with scene.dispatcher(webhooks_allow_private=False):
        wait_until(
            lambda: message(scene.db, endpoint["endpoint_id"])["attempts"] == 1, 20, "attempt"
        )
    stored = message(scene.db, endpoint["endpoint_id"])
    assert stored["status"] == "pending"
    assert stored["error"].startswith("refused: ")
    assert "loopback" in stored["error"]
    assert scene.receiver.at("/inside") == []


def test_a_rotated_secret_signs_next_to_the_new_one_during_the_overlap(scene: Scene) -> None:
    endpoint = subscribe(scene.hooks, scene.receiver.on("/rotate", answer(200)), ["points.awarded"])
    rotated = scene.hooks.api.post(
        f"{ROOT}/{endpoint['endpoint_id']}/rotate-secret",
        headers=scene.hooks.headers,
        json={"overlap_seconds": 3600},
    )
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != endpoint["secret"]
    assert rotated.json()["secret_rotating_until"] is not None
    award(scene.hooks, "k1")
    with scene.dispatcher():
        wait_until(lambda: scene.receiver.at("/rotate"), 20, "the delivery")
    request = scene.receiver.at("/rotate")[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (endpoint["secret"], new_secret):
        assert Webhook(secret).verify(request.body, request.headers)["type"] == "points.awarded"


def test_a_slow_endpoint_does_not_delay_the_others(scene: Scene) -> None:
    slow = subscribe(
        scene.hooks, scene.receiver.on("/slow", answer(200, delay=6.0)), ["points.awarded"]
    )
    fast = subscribe(scene.hooks, scene.receiver.on("/fast", answer(200)), ["points.awarded"])
    for n in range(8):
        award(scene.hooks, f"p{n}")

    def delivered(endpoint_id: str) -> int:
        row = scene.db.execute(
            "SELECT count(*) FROM webhook_messages WHERE endpoint_id = %s AND status = 'delivered'",
            (endpoint_id,),
        ).fetchone()
        assert row is not None
        return int(row[0])

    with scene.dispatcher(
        attempt_timeout_seconds=10.0,
        lease_seconds=30.0,
        max_in_flight=6,
        max_in_flight_per_endpoint=2,
    ):
        wait_until(lambda: delivered(fast["endpoint_id"]) == 8, 20, "the fast endpoint served")
        # Everything for the fast endpoint went through while the slow one still holds its
        # first two (its bound): none of the slow endpoint's answers has come back yet.
        assert delivered(slow["endpoint_id"]) == 0
        assert len(scene.receiver.at("/slow")) == 2


def test_the_test_route_sends_a_signed_sample_message(scene: Scene) -> None:
    # Subscribed to badges only: a test message goes to it all the same.
    endpoint = subscribe(scene.hooks, scene.receiver.on("/sample", answer(200)), ["badge.awarded"])
    sent = scene.hooks.api.post(
        f"{ROOT}/{endpoint['endpoint_id']}/test", headers=scene.hooks.headers
    )
    assert sent.status_code == 202, sent.text
    missing = scene.hooks.api.post(f"{ROOT}/whe_{'0' * 26}/test", headers=scene.hooks.headers)
    assert missing.status_code == 404
    with scene.dispatcher():
        wait_until(lambda: scene.receiver.at("/sample"), 20, "the test message")
    (request,) = scene.receiver.at("/sample")
    assert request.headers["webhook-id"] == sent.json()["message_id"]
    body = Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert body["type"] == "webhook.test"
    assert body["data"]["project_id"] == scene.hooks.tenant.project_id
