"""Console pages over the api's own reads and actions, without a browser: definitions
change status and keep their code; manual changes wait for confirmation and refuse an
overdraft; leaderboards page and explain an unsupported period."""

from __future__ import annotations

import re
from typing import Any

from litestar.testing import TestClient

from tests.conftest import Story, Tenant
from tests.console.conftest import form_token
from tests.console.test_console_security import RULE, sign_in


def _post(client: TestClient[Any], page: str, path: str, data: dict[str, str]) -> Any:
    token = form_token(client.get(page).text)
    return client.post(path, data=data | {"_csrf_token": token}, follow_redirects=False)


def test_pause_resume_and_archive_change_only_the_status(
    console_client: TestClient[Any], story: Story, tenant: Tenant
) -> None:
    story.define("points-rules", RULE)
    sign_in(console_client, tenant.live_key)
    for action, status in (("pause", "paused"), ("resume", "active"), ("archive", "archived")):
        answer = _post(
            console_client,
            "/console/definitions",
            "/console/definitions/points-rules/buy/status",
            {"action": action},
        )
        assert answer.status_code == 303
        stored = story.get("/admin/points-rules/buy")
        assert (stored["status"], stored["amount"]["fixed"]) == (status, 10)


def test_an_edit_keeps_the_code_and_shows_errors_by_field(
    console_client: TestClient[Any], story: Story, tenant: Tenant
) -> None:
    story.define("points-rules", RULE)
    sign_in(console_client, tenant.live_key)
    edit = "/console/definitions/points-rules/buy"
    renamed = _post(console_client, edit, edit, {"definition": '{"code": "x", "name": "X"}'})
    assert renamed.status_code == 422
    assert '<li data-field="trigger">' in renamed.text  # the api's own message, by path
    renamed = _post(
        console_client, edit, edit, {"definition": str(RULE | {"code": "x"}).replace("'", '"')}
    )
    assert renamed.status_code == 422 and '<li data-field="code">' in renamed.text
    bad_json = _post(console_client, edit, edit, {"definition": "{"})
    assert '<li data-field="body">' in bad_json.text
    saved = _post(
        console_client,
        edit,
        edit,
        {"definition": str(RULE | {"amount": {"fixed": 25}}).replace("'", '"')},
    )
    assert saved.status_code == 303
    assert story.get("/admin/points-rules/buy")["amount"]["fixed"] == 25


def test_a_manual_change_waits_for_confirmation_and_refuses_an_overdraft(
    console_client: TestClient[Any], story: Story, tenant: Tenant
) -> None:
    sign_in(console_client, tenant.live_key)
    page = "/console/participants/p"
    review = _post(console_client, page, f"{page}/points", {"direction": "award", "amount": "7"})
    assert review.status_code == 200 and "Award 7 points" in review.text
    assert story.get("/participants/p/points")["balance"] == 0
    confirm = {
        name: value
        for name, value in re.findall(r'name="([a-z_]+)" value="([^"]*)"', review.text)
        if name != "_csrf_token"
    }
    for _ in range(2):  # a repeated confirmation changes nothing more
        assert _post(console_client, page, f"{page}/points", confirm).status_code == 303
    assert story.get("/participants/p/points")["balance"] == 7
    overdraft = _post(
        console_client,
        page,
        f"{page}/points",
        {"direction": "deduct", "amount": "8", "confirmed": "yes"},
    )
    assert overdraft.status_code == 422 and "The balance is 7; cannot deduct 8." in overdraft.text


def test_leaderboards_page_and_explain_an_unsupported_period(
    console_client: TestClient[Any], story: Story, tenant: Tenant
) -> None:
    story.define("points-rules", RULE)
    story.define("leaderboards", {"code": "top", "name": "Top"})
    story.define(
        "leaderboards",
        {
            "code": "buyers",
            "name": "Buyers",
            "metric": "criterion",
            "period": "weekly",
            "criterion": {"fact_type": "custom.purchase"},
        },
    )
    for n in range(55):
        story.send("purchase", f"p{n:02d}")
    sign_in(console_client, tenant.live_key)
    second = console_client.get("/console/leaderboards", params={"board": "top", "page": 2}).text
    assert "page 2 of 2" in second and second.count("/console/participants/") == 5
    refused = console_client.get(
        "/console/leaderboards", params={"board": "buyers", "period": "daily"}
    )
    assert refused.status_code == 422 and "kept per weekly only" in refused.text


def test_the_overview_counts_todays_events_and_outcomes(
    console_client: TestClient[Any], story: Story, tenant: Tenant
) -> None:
    story.define("points-rules", RULE)
    for participant in ("a", "b", "a"):
        story.send("purchase", participant, timestamp="2020-01-01T00:00:00Z")
    story.send("login", "a")
    sign_in(console_client, tenant.live_key)
    page = console_client.get("/console/").text
    # Counted when received, whatever the events' own timestamps say.
    assert '<b id="events-today">4</b>' in page and '<b id="events-last-hour">4</b>' in page
    types = dict(re.findall(r"<tr><td>([a-z_.]+)</td><td class=\"num\">(\d+)</td></tr>", page))
    assert types == {"custom.purchase": "3", "custom.login": "1", "points.awarded": "3"}
    bars = re.findall(r'<rect x="\d+" y="\d+" width="16" height="(\d+)">', page)
    assert len(bars) == 24 and bars.count("100") == 1  # this hour's bar is the tallest
