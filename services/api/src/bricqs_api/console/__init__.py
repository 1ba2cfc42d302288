"""The web console at /console: server-rendered pages over the api's own storage reads
and actions, for the people who run a project. No build step; every asset is served from
static/ beside this module (htmx is vendored there)."""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.config.csrf import CSRFConfig
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from bricqs_api.console.dead_letters import DeadLetterPages
from bricqs_api.console.definitions import DefinitionPages
from bricqs_api.console.events import EventPages
from bricqs_api.console.leaderboards import LeaderboardPages
from bricqs_api.console.overview import OverviewPage
from bricqs_api.console.participants import ParticipantPages
from bricqs_api.console.rendering import EXCEPTION_HANDLERS, add_security_headers
from bricqs_api.console.session import provide_sessions, provide_user
from bricqs_api.console.signin import SignInController
from bricqs_api.console.webhooks import WebhookPages
from bricqs_api.settings import ApiSettings

CSRF_COOKIE = "bricqs_console_csrf"


def console_routes(settings: ApiSettings) -> list[ControllerRouterHandler]:
    """The console's router, or nothing when no CONSOLE_SESSION_SECRET is set."""
    if not settings.console_session_secret:
        return []
    csrf = CSRFConfig(
        secret=settings.console_session_secret,
        cookie_name=CSRF_COOKIE,
        cookie_path="/console",
        cookie_secure=settings.console_cookie_secure,
        cookie_httponly=True,
        cookie_samesite="strict",
    )
    return [
        Router(
            path="/console",
            route_handlers=[
                SignInController,
                OverviewPage,
                EventPages,
                DefinitionPages,
                ParticipantPages,
                LeaderboardPages,
                DeadLetterPages,
                WebhookPages,
                create_static_files_router(
                    path="/static",
                    directories=[Path(__file__).parent / "static"],
                    include_in_schema=False,
                    # Each asset's name changes with its version (htmx-2.0.11.min.js).
                    cache_control=None,
                ),
            ],
            dependencies={
                "sessions": Provide(provide_sessions, sync_to_thread=False),
                "user": Provide(provide_user),
            },
            middleware=[DefineMiddleware(CSRFMiddleware, config=csrf)],
            exception_handlers=EXCEPTION_HANDLERS,
            after_request=add_security_headers,
            include_in_schema=False,
        )
    ]
