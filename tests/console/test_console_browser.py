"""The console in a real browser (Debian's Chromium through Playwright): what a person
running a project does with it, from sign-in to sign-out, with screenshots of each page
at desktop and phone width (screenshots/, git-ignored)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from playwright.sync_api import Browser, Page, expect

from bricqs.schemas import Envelope, encode_envelope
from bricqs.stream import DeadLetter, dead_letter_key, stream_key
from tests.conftest import Story, Tenant
from tests.console.conftest import DESKTOP, screenshot, sign_in, tenant_of

pytestmark = pytest.mark.slow

BAD_RULE = """{
  "code": "buy",
  "name": "Buy",
  "trigger": {"fact_type": "custom.purchase"},
  "amount": {"fixed": "ten"}
}"""
GOOD_RULE = BAD_RULE.replace('"ten"', "10")


def _define(base: str, key: str, segment: str, body: dict[str, Any]) -> None:
    response = httpx.post(
        f"{base}/api/v1/gamify/admin/{segment}", headers={"X-API-Key": key}, json=body
    )
    assert response.status_code == 201, response.text


def _dead_letter(redis: Any, project_id: str, environment: str, participant: str) -> None:
    now = datetime.now(UTC)
    envelope = Envelope(
        event_id=f"evt-{participant}",
        project_id=project_id,
        environment=environment,
        event_name="purchase",
        participant_id=participant,
        properties={"sku": "A-1"},
        occurred_at=now,
        received_at=now,
    )
    letter = DeadLetter(encode_envelope(envelope), "rejected: test", stream_key(0), "1-0", 5)
    redis.xadd(dead_letter_key(0), letter.fields())


def _follow(page: Page, link: str, path: str) -> None:
    """Click a link and wait for its page: Playwright's click does not wait for the
    navigation to finish, so without this the next step can act on the page being left
    (the definition editor has its own "Participant id" field)."""
    page.get_by_role("link", name=link).click()
    page.wait_for_url(re.compile(re.escape(path) + r"(\?.*)?$"))


def _create_rule_with_a_mistake_then_fix_it(page: Page, base: str) -> None:
    page.goto(f"{base}/console/definitions")
    page.get_by_role("link", name="New points rules…").click()
    page.get_by_label("Definition (JSON)").fill(BAD_RULE)
    page.get_by_role("button", name="Create").click()
    error = page.locator('.errors li[data-field="amount.fixed"]')
    expect(error).to_be_visible()
    screenshot(page, "definition-error")
    page.get_by_label("Definition (JSON)").fill(GOOD_RULE)
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(f"{base}/console/definitions/points-rules/buy")
    expect(page.locator(".status-active")).to_have_text("active")


def _award_by_hand(page: Page) -> None:
    page.get_by_label("Change", exact=True).select_option("award")
    page.get_by_label("Points", exact=True).fill("15")
    page.get_by_label("Reason", exact=True).fill("support goodwill")
    page.get_by_role("button", name="Review…").first.click()
    expect(page.get_by_role("heading", name="Confirm")).to_be_visible()
    screenshot(page, "confirm-award")
    page.get_by_role("button", name="Award 15 points").click()
    expect(page.locator("#balance")).to_have_text("35")
    expect(page.get_by_role("cell", name="support goodwill")).to_be_visible()


def _replay_the_dead_letter(page: Page, base: str, redis: Any) -> None:
    page.goto(f"{base}/console/dead-letters")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)  # the other project's letter is not shown
    expect(rows.first).to_contain_text("carol")
    screenshot(page, "dead-letters")
    before = redis.xlen(stream_key(0))
    page.get_by_role("button", name="Replay evt-carol").click()
    page.get_by_role("button", name="Replay 1").click()
    expect(page.get_by_role("status")).to_contain_text("Replayed 1")
    assert redis.xlen(stream_key(0)) == before + 1
    assert redis.xlen(dead_letter_key(0)) == 1  # only the other project's is left


def test_a_person_runs_a_project_from_the_console(
    console_url: str,
    browser: Browser,
    sync_ingest: TestClient[Any],
    project: Tenant,
    redis_client: Any,
    postgres_server: Any,
) -> None:
    base, key = console_url, project.live_key
    context = browser.new_context(viewport=DESKTOP, timezone_id="Asia/Tokyo")
    page = context.new_page()
    # A script or style the CSP refuses, or a missing asset, shows as a console error; the
    # field errors' 422 is the one error answer this story expects.
    errors: list[str] = []
    page.on(
        "console",
        lambda message: (
            message.type == "error"
            and "status of 422" not in message.text
            and errors.append(page.url + " " + message.text)
        ),
    )
    sign_in(page, base, key)
    _create_rule_with_a_mistake_then_fix_it(page, base)

    _define(
        base,
        key,
        "badges",
        {
            "code": "regular",
            "name": "Regular",
            "criteria": [{"criterion": {"fact_type": "custom.purchase"}, "threshold": 2}],
        },
    )
    _define(base, key, "leaderboards", {"code": "top", "name": "Top buyers"})
    story = Story(sync_ingest, sync_ingest, project, key)
    for participant in ("alice", "alice", "bob"):
        story.send("purchase", participant, {"sku": "A-1"})

    _follow(page, "Participants", "/console/participants")
    page.get_by_label("Participant id").fill("alice")
    page.get_by_role("button", name="Open").click()
    expect(page.locator("#balance")).to_have_text("20")
    expect(page.locator(".badge-earned")).to_have_text("regular")
    # Times read in the browser's zone, with UTC on hover. time.js rewrites them after htmx
    # settles the swapped page, so the text is awaited (a plain read raced it once in CI).
    first_time = page.locator("time").first
    expect(first_time).to_have_attribute("title", re.compile("UTC"))
    expect(first_time).not_to_contain_text("UTC")
    _award_by_hand(page)
    screenshot(page, "participant")

    _follow(page, "Leaderboards", "/console/leaderboards")
    expect(page.locator("tbody tr").first).to_contain_text("alice")
    page.get_by_label("Find participant").fill("bob")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#found")).to_have_text("bob is #2 of 2 with 10.")
    screenshot(page, "leaderboards")

    _dead_letter(redis_client, project.project_id, "live", "carol")
    other = tenant_of(postgres_server.url, "another project")
    _dead_letter(redis_client, other.project_id, "live", "mallory")
    _replay_the_dead_letter(page, base, redis_client)

    _follow(page, "Events", "/console/events")
    page.get_by_role("link", name="purchase").click()
    expect(page.locator("tbody tr")).to_have_count(3)
    screenshot(page, "event")
    page.goto(f"{base}/console/events")
    screenshot(page, "events")
    page.goto(f"{base}/console/definitions")
    screenshot(page, "definitions")
    _follow(page, "Webhooks", "/console/webhooks")
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    screenshot(page, "webhooks")
    _follow(page, "Overview", "/console/")
    expect(page.locator("#events-today")).to_have_text("3")
    screenshot(page, "overview")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/console/sign-in")
    screenshot(page, "sign-in")
    page.goto(f"{base}/console/participants/alice")
    assert page.url == f"{base}/console/sign-in"
    assert errors == [], "\n".join(errors)
    context.close()


def test_reading_pages_work_without_javascript(
    console_url: str, browser: Browser, sync_ingest: TestClient[Any], project: Tenant
) -> None:
    Story(sync_ingest, sync_ingest, project, project.live_key).send("purchase", "dora")
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    page = context.new_page()
    sign_in(page, console_url, project.live_key)
    page.goto(f"{console_url}/console/participants/dora")
    expect(page.get_by_role("cell", name="custom.purchase")).to_be_visible()
    page.get_by_role("link", name="Events").click()
    expect(page.get_by_role("link", name="purchase")).to_be_visible()
    context.close()


def test_the_keyboard_reaches_the_content_first(
    console_url: str, browser: Browser, project: Tenant
) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in(page, console_url, project.live_key)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Overview")).to_be_focused()
    context.close()
