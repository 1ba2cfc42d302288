"""The definitions editor's preview: a draft run over a participant's last facts shows the
points, progress and periods it would have made, and writes nothing."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
from litestar.testing import TestClient
from psycopg import sql

from bricqs_devstack.servers import Server
from tests.conftest import Story, Tenant
from tests.console.conftest import form_token
from tests.console.test_console_security import sign_in

EDITOR = "/console/definitions/{segment}/new"


def _preview(
    client: TestClient[Any], segment: str, draft: dict[str, Any], participant: str, facts: str
) -> Any:
    token = form_token(client.get(EDITOR.format(segment=segment)).text)
    form = {"definition": json.dumps(draft), "participant": participant, "facts": facts}
    return client.post(
        f"/console/definitions/preview/{segment}", data=form | {"_csrf_token": token}
    )


def _rows(database_url: str) -> dict[str, int]:
    """Every table's row count (the preview must change none)."""
    with psycopg.connect(database_url) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        count = sql.SQL("SELECT count(*) FROM {}")
        return {
            table: conn.execute(count.format(sql.Identifier(table))).fetchone()[0]  # type: ignore[index]
            for table in tables
        }


def test_a_preview_shows_what_a_draft_would_have_done_and_writes_nothing(
    console_client: TestClient[Any], story: Story, tenant: Tenant, postgres_server: Server
) -> None:
    for day, amount in ((1, 5), (1, 20), (2, 7), (4, 9)):
        story.send("purchase", "p", {"amount": amount}, timestamp=f"2026-03-0{day}T10:00:00Z")
    story.send("login", "p", timestamp="2026-03-05T10:00:00Z")
    story.send("purchase", "other", {"amount": 100}, timestamp="2026-03-05T10:00:00Z")
    sign_in(console_client, tenant.live_key)
    before = _rows(postgres_server.url)

    rule = {
        "code": "spend",
        "name": "Spend",
        "trigger": {
            "fact_type": "custom.purchase",
            "where": {"path": "amount", "op": "gte", "value": 7},
        },
        "amount": {"property": "amount", "multiplier": 2},
    }
    points = _preview(console_client, "points-rules", rule, "p", "500")
    assert points.status_code == 200, re.findall(r"<li data-field.*</li>", points.text)
    assert '<b id="preview-points">72</b>' in points.text  # (20 + 7 + 9) * 2
    assert "over 5 facts of <code>p</code>" in points.text

    badge = {
        "code": "big",
        "name": "Big spender",
        "criteria": [
            {
                "criterion": {
                    "fact_type": "custom.purchase",
                    "aggregate": "sum",
                    "property": "amount",
                },
                "threshold": 30,
            }
        ],
    }
    reached = _preview(console_client, "badges", badge, "p", "500")
    third = re.findall(r"<tr[^>]*><td><code>(fact_[A-Za-z0-9]+)</code>", reached.text)
    assert len(third) == 4  # the login is not looked at
    assert f'<code id="preview-reached">{third[2]}</code>' in reached.text  # 5 + 20 + 7
    # The last 2 facts only (a login and a purchase of 9): 9 of 30.
    assert "Not reached." in _preview(console_client, "badges", badge, "p", "2").text

    streak = {"code": "daily", "name": "Daily", "trigger": {"fact_type": "custom.purchase"}}
    periods = _preview(console_client, "streaks", streak, "p", "500").text
    assert '<span id="preview-periods">d:2026-03-01, d:2026-03-02, d:2026-03-04</span>' in periods

    assert _rows(postgres_server.url) == before
    assert story.get("/admin/badges")["items"] == []


def test_a_preview_shows_the_drafts_and_the_forms_errors_by_field(
    console_client: TestClient[Any], tenant: Tenant
) -> None:
    sign_in(console_client, tenant.live_key)
    wrong = _preview(console_client, "points-rules", {"code": "x", "name": "X"}, "", "9999")
    assert wrong.status_code == 422
    for field in ("trigger", "participant", "facts"):
        assert f'<li data-field="{field}">' in wrong.text
    refused = console_client.post(
        "/console/definitions/preview/points-rules", data={"definition": "{}"}
    )
    assert refused.status_code == 403  # no CSRF token
