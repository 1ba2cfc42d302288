"""Signing in to the console with a project API key, and out again."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from bricqs.auth import AuthUnavailable
from bricqs.keys import hash_key
from bricqs_api.console.rendering import page
from bricqs_api.console.session import CONSOLE_SCOPES, SESSION_COOKIE, ConsoleSessions
from bricqs_api.context import ApiClients

Form = Body(media_type=RequestEncodingType.URL_ENCODED)


def _session_cookie(value: str, max_age: int, secure: bool) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=value,
        path="/console",
        max_age=max_age,
        httponly=True,
        secure=secure,
        samesite="strict",
    )


class SignInController(Controller):
    """The sign-in page, the key check and sign-out."""

    path = "/"
    include_in_schema = False

    @get("/sign-in")
    async def sign_in_page(self, request: Request[Any, Any, Any]) -> Response[str]:
        """The sign-in form."""
        return page(request, "sign_in.html", user=None, error=None)

    @post("/sign-in", status_code=303)
    async def sign_in(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[dict[str, str], Form],
        clients: NamedDependency[ApiClients],
        sessions: NamedDependency[ConsoleSessions],
    ) -> Response[Any]:
        """Check the key with the api's own key lookup; start a session for it."""
        key = data.get("api_key", "").strip()
        try:
            owner = await clients.keys.owner(key) if key else None
        except AuthUnavailable:
            return page(
                request,
                "sign_in.html",
                status_code=503,
                user=None,
                error="Keys cannot be checked right now; try again in a moment.",
            )
        if owner is None or CONSOLE_SCOPES.isdisjoint(owner.scopes):
            error = (
                "This key is unknown or revoked."
                if owner is None
                else "This key has neither the read nor the admin scope."
            )
            return page(request, "sign_in.html", status_code=401, user=None, error=error)
        response: Response[Any] = Redirect("/console/", status_code=303)
        max_age = int(sessions.lifetime_seconds)
        response.set_cookie(
            _session_cookie(
                sessions.issue(hash_key(key)), max_age, clients.settings.console_cookie_secure
            )
        )
        return response

    @post("/sign-out", status_code=303)
    async def sign_out(self, clients: NamedDependency[ApiClients]) -> Response[Any]:
        """Forget the session cookie."""
        response: Response[Any] = Redirect("/console/sign-in", status_code=303)
        response.set_cookie(_session_cookie("", 0, clients.settings.console_cookie_secure))
        return response
