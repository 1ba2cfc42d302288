"""The dispatcher delivers every outcome, signed, to a real receiver on loopback; retries
on the Standard Webhooks schedule (the test moves the clock); 410 disables the endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from standardwebhooks.webhooks import Webhook

from bricqs_dispatcher.schedule import MAX_ATTEMPTS, RETRY_DELAYS_SECONDS
from tests.conftest import Story
from tests.processes import wait_until
from tests.webhooks.conftest import Scene, answer, subscribe
from tests.webhooks.test_outbox import define_points_and_badge

OUTCOME_TYPES = [
    "points.awarded",
    "points.deducted",
    "badge.awarded",
    "challenge.completed",
    "streak.extended",
    "tier.changed",
]


def message(db: psycopg.Connection[Any], endpoint_id: str) -> dict[str, Any]:
    """The endpoint's only message, as stored."""
    rows = db.execute(
        "SELECT status, attempts, next_attempt_at, last_status, last_error"
        " FROM webhook_messages WHERE endpoint_id = %s",
        (endpoint_id,),
    ).fetchall()
    assert len(rows) == 1
    return dict(zip(("status", "attempts", "next", "http", "error"), rows[0], strict=True))


def award(story: Story, participant_id: str) -> None:
    """One manual award: one points.awarded outcome."""
    response = story.api.post(
        "/api/v1/gamify/points/award",
        headers=story.headers,
        json={"participant_id": participant_id, "amount": 1},
    )
    assert response.status_code == 200, response.text


def mixed_workload(story: Story) -> None:
    define_points_and_badge(story)
    story.define(
        "tiers",
        {
            "code": "status",
            "name": "Status",
            "levels": [
                {"code": "bronze", "name": "Bronze", "min_points": 0},
                {"code": "silver", "name": "Silver", "min_points": 20},
            ],
        },
    )
    story.define(
        "streaks",
        {"code": "daily", "name": "Daily", "trigger": {"fact_type": "custom.purchase"}},
    )
    story.define(
        "challenges",
        {
            "code": "two",
            "name": "Two",
            "objectives": [
                {"code": "buy-2", "criterion": {"fact_type": "custom.purchase"}, "target": 2}
            ],
        },
    )
    for pid in ("a", "b", "c"):
        for _ in range(3):
            story.send("purchase", pid)
    response = story.api.post(
        "/api/v1/gamify/points/deduct",
        headers=story.headers,
        json={"participant_id": "a", "amount": 5},
    )
    assert response.status_code == 200, response.text


def test_every_outcome_reaches_the_endpoint_signed(scene: Scene) -> None:
    endpoint = subscribe(scene.hooks, scene.receiver.on("/all", answer(200)))
    mixed_workload(scene.hooks)
    rows = scene.db.execute(
        "SELECT fact_id, fact_type FROM facts WHERE project_id = %s AND fact_type = ANY(%s)",
        (scene.hooks.tenant.project_id, OUTCOME_TYPES),
    ).fetchall()
    expected = {fact_id for fact_id, _ in rows}
    assert {t for _, t in rows} == set(OUTCOME_TYPES)  # the workload made every kind

    with scene.dispatcher():
        wait_until(
            lambda: {r.headers["webhook-id"] for r in scene.receiver.at("/all")} >= expected,
            20,
            "every outcome delivered",
        )
    got = scene.receiver.at("/all")
    assert {r.headers["webhook-id"] for r in got} == expected
    verifier = Webhook(endpoint["secret"])
    key = base64.b64decode(endpoint["secret"].removeprefix("whsec_"))
    for request in got:
        body = json.loads(request.body)
        assert verifier.verify(request.body, request.headers) == body
        plain = hmac.new(key, request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-bricqs-signature"] == f"sha256={plain}"
        assert request.headers["x-bricqs-event"] == body["type"]
        assert body["data"]["fact_id"] == request.headers["webhook-id"]
        assert body["data"]["project_id"] == scene.hooks.tenant.project_id
        assert body["data"]["environment"] == "live"
    statuses = scene.db.execute(
        "SELECT status, count(*) FROM webhook_messages WHERE endpoint_id = %s GROUP BY 1",
        (endpoint["endpoint_id"],),
    ).fetchall()
    assert statuses == [("delivered", len(expected))]


def test_500_then_200_is_retried_after_the_first_delay(scene: Scene) -> None:
    url = scene.receiver.on("/flaky", lambda n: (500, {}, 0.0) if n == 0 else (200, {}, 0.0))
    endpoint = subscribe(scene.hooks, url, ["points.awarded"])
    award(scene.hooks, "f1")
    with scene.dispatcher() as dispatcher:
        wait_until(
            lambda: message(scene.db, endpoint["endpoint_id"])["attempts"] == 1, 20, "attempt 1"
        )
        first = message(scene.db, endpoint["endpoint_id"])
        assert (first["status"], first["http"]) == ("pending", 500)
        # The test's random fraction is 0.5: the wait is exactly the nominal first delay.
        assert (first["next"] - scene.clock.now).total_seconds() == RETRY_DELAYS_SECONDS[0]
        scene.clock.advance(RETRY_DELAYS_SECONDS[0] - 1)
        # Rounds at this time are observed before asserting nothing more was sent.
        dispatcher.wait_rounds()
        assert len(scene.receiver.at("/flaky")) == 1
        scene.clock.advance(1)
        wait_until(
            lambda: message(scene.db, endpoint["endpoint_id"])["status"] == "delivered", 20, "2"
        )
    got = scene.receiver.at("/flaky")
    assert len(got) == 2
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    assert got[0].headers["x-bricqs-delivery"] != got[1].headers["x-bricqs-delivery"]


def test_a_timeout_is_retried_on_schedule_until_the_message_fails(scene: Scene) -> None:
    endpoint = subscribe(
        scene.hooks, scene.receiver.on("/slow", answer(200, delay=3.0)), ["points.awarded"]
    )
    award(scene.hooks, "t1")
    with scene.dispatcher(attempt_timeout_seconds=0.3):
        for attempt in range(1, MAX_ATTEMPTS + 1):
            wait_until(
                lambda a=attempt: message(scene.db, endpoint["endpoint_id"])["attempts"] == a,
                20,
                f"attempt {attempt}",
            )
            stored = message(scene.db, endpoint["endpoint_id"])
            assert stored["error"] == "timeout"
            if attempt < MAX_ATTEMPTS:
                assert stored["status"] == "pending"
                delay = (stored["next"] - scene.clock.now).total_seconds()
                assert delay == RETRY_DELAYS_SECONDS[attempt - 1]
                scene.clock.advance(delay)
    assert message(scene.db, endpoint["endpoint_id"])["status"] == "failed"
    total = sum(RETRY_DELAYS_SECONDS)
    assert 2.5 * 86_400 < total < 3 * 86_400  # about three days of retries


def test_429_retry_after_is_honoured(scene: Scene) -> None:
    url = scene.receiver.on(
        "/busy", lambda n: (429, {"retry-after": "120"}, 0.0) if n == 0 else (200, {}, 0.0)
    )
    endpoint = subscribe(scene.hooks, url, ["points.awarded"])
    award(scene.hooks, "b1")
    with scene.dispatcher():
        wait_until(
            lambda: message(scene.db, endpoint["endpoint_id"])["attempts"] == 1, 20, "attempt 1"
        )
        stored = message(scene.db, endpoint["endpoint_id"])
        assert stored["http"] == 429
        assert (stored["next"] - scene.clock.now).total_seconds() == 120
        scene.clock.advance(120)
        wait_until(
            lambda: message(scene.db, endpoint["endpoint_id"])["status"] == "delivered", 20, "2"
        )


def test_410_disables_the_endpoint(scene: Scene) -> None:
    endpoint = subscribe(scene.hooks, scene.receiver.on("/gone", answer(410)), ["points.awarded"])
    for pid in ("g1", "g2"):
        award(scene.hooks, pid)
    with scene.dispatcher() as dispatcher:
        wait_until(
            lambda: (
                not scene.hooks.api.get(
                    f"/api/v1/gamify/admin/webhooks/{endpoint['endpoint_id']}",
                    headers=scene.hooks.headers,
                ).json()["enabled"]
            ),
            20,
            "the endpoint disabled",
        )
        dispatcher.wait_rounds()
        sent = len(scene.receiver.at("/gone"))
        scene.clock.advance(86_400)
        dispatcher.wait_rounds()
        assert len(scene.receiver.at("/gone")) == sent
    shown = scene.hooks.api.get(
        f"/api/v1/gamify/admin/webhooks/{endpoint['endpoint_id']}", headers=scene.hooks.headers
    ).json()
    assert shown["disabled_reason"] == "the receiver answered 410 Gone"
    statuses = [
        r[0]
        for r in scene.db.execute(
            "SELECT status FROM webhook_messages WHERE endpoint_id = %s",
            (endpoint["endpoint_id"],),
        ).fetchall()
    ]
    # Messages answered 410 failed; any other waits for the endpoint to be enabled again.
    assert "failed" in statuses
    assert set(statuses) <= {"failed", "pending"}

    # The delivery log shows it, and a failed message can be sent again.
    log = scene.hooks.api.get(
        f"/api/v1/gamify/admin/webhooks/{endpoint['endpoint_id']}/deliveries",
        headers=scene.hooks.headers,
    ).json()["items"]
    failed = [d for d in log if d["status"] == "failed"]
    assert failed and all(d["last_status"] == 410 and d["attempts"] == 1 for d in failed)
    retry = f"/api/v1/gamify/admin/webhooks/{endpoint['endpoint_id']}/deliveries"
    retried = scene.hooks.api.post(
        f"{retry}/{failed[0]['message_id']}/retry", headers=scene.hooks.headers
    )
    assert retried.status_code == 202, retried.text
    again = scene.db.execute(
        "SELECT status FROM webhook_messages WHERE endpoint_id = %s AND fact_id = %s",
        (endpoint["endpoint_id"], failed[0]["message_id"]),
    ).fetchone()
    assert again == ("pending",)


def test_replay_sends_the_messages_of_a_time_range_again(scene: Scene) -> None:
    endpoint = subscribe(scene.hooks, scene.receiver.on("/replay", answer(200)), ["points.awarded"])
    award(scene.hooks, "y1")
    award(scene.hooks, "y2")
    replay = f"/api/v1/gamify/admin/webhooks/{endpoint['endpoint_id']}/replay"
    with scene.dispatcher():
        wait_until(lambda: len(scene.receiver.at("/replay")) == 2, 20, "the first deliveries")
        wait_until(
            lambda: (
                {message["status"] for message in deliveries(scene.hooks, endpoint)}
                == {"delivered"}
            ),
            20,
            "both recorded",
        )
        now = datetime.now(UTC)
        nothing_failed = scene.hooks.api.post(
            replay,
            headers=scene.hooks.headers,
            json={"since": (now - timedelta(hours=1)).isoformat(), "until": now.isoformat()},
        )
        assert nothing_failed.json() == {"replayed": 0}  # only failed ones by default
        again = scene.hooks.api.post(
            replay,
            headers=scene.hooks.headers,
            json={
                "since": (now - timedelta(hours=1)).isoformat(),
                "until": (now + timedelta(hours=1)).isoformat(),
                "statuses": ["delivered"],
            },
        )
        assert again.status_code == 202, again.text
        assert again.json() == {"replayed": 2}
        wait_until(lambda: len(scene.receiver.at("/replay")) == 4, 20, "the replayed deliveries")
    ids = [r.headers["webhook-id"] for r in scene.receiver.at("/replay")]
    assert sorted(ids[:2]) == sorted(ids[2:])  # the same messages, the same webhook-ids


def deliveries(story: Story, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    response = story.api.get(
        f"/api/v1/gamify/admin/webhooks/{endpoint['endpoint_id']}/deliveries",
        headers=story.headers,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])
