"""Fixtures of the console tests: the api (console on) under Granian on a loopback port,
Debian's Chromium driven by Playwright, and a helper that signs a page in.

Screenshots go to screenshots/ at the repository root (git-ignored)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient
from playwright.sync_api import Browser, Page, sync_playwright

from bricqs_api.app import create_app
from bricqs_api.settings import ApiSettings
from bricqs_devstack.servers import Server
from tests.conftest import Tenant, make_tenant
from tests.ingest.helpers import granian_app

CHROMIUM = "/usr/bin/chromium"
SECRET = "console-test-session-secret-0123456789"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def console_url(redis_server: Server, postgres_server: Server) -> Iterator[str]:
    """The api with its console, as a real HTTP server a browser can reach (one for the
    module: its start is most of a browser test's time)."""
    with granian_app(
        "bricqs_api.app:create_app",
        redis_server.url,
        postgres_server.url,
        CONSOLE_SESSION_SECRET=SECRET,
        RULES_REFRESH_SECONDS="0",
    ) as base:
        yield base


@pytest.fixture
def console_client(redis_server: Server, postgres_server: Server) -> Iterator[TestClient[Any]]:
    """The api with its console in process, for what needs no browser; over "https", so
    the client sends the Secure cookies back as a browser does."""
    settings = ApiSettings(
        redis_url=redis_server.url,
        database_url=postgres_server.url,
        log_level="WARNING",
        rules_refresh_seconds=0,
        console_session_secret=SECRET,
    )
    with TestClient(create_app(settings), base_url="https://127.0.0.1") as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium, for one module: Playwright's sync API keeps an event loop running in this
    thread while it lives, where later tests' asyncio.run could not start."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: run scripts/install-deps.sh")
    with sync_playwright() as playwright:
        # --no-sandbox: the tests may run as root (CI does), where Chromium's sandbox refuses.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def tenant_of(database_url: str, name: str) -> Tenant:
    """A fresh project with its keys, made in a thread: Playwright's sync API keeps an
    event loop running in this one, where `make_tenant`'s asyncio.run cannot start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(make_tenant, database_url, name).result()


@pytest.fixture
def project(postgres_server: Server) -> Tenant:
    """The signed-in project of a console test."""
    return tenant_of(postgres_server.url, "console project")


def sign_in(page: Page, base: str, key: str) -> None:
    """Sign the page's browser context in with `key`."""
    page.goto(f"{base}/console/sign-in")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/console/")


def screenshot(page: Page, name: str) -> None:
    """The page at desktop and phone width, as screenshots/<name>-{desktop,phone}.png."""
    SCREENSHOTS.mkdir(exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=SCREENSHOTS / f"{name}-{label}.png", full_page=True)
    page.set_viewport_size(DESKTOP)


def set_key(
    database_url: str, key_id: str, *, scopes: str | None = None, revoke: bool = False
) -> None:
    """Give a key other scopes (a PostgreSQL array literal, '{read}') or revoke it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if scopes is not None:
            conn.execute("UPDATE api_keys SET scopes = %s WHERE key_id = %s", (scopes, key_id))
        if revoke:
            conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = %s", (key_id,))


def form_token(html: str) -> str:
    """The CSRF token a console page's forms carry."""
    found = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)
