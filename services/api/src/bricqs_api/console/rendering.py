"""Rendering console pages: the Jinja2 templates beside this module, the security headers
every console answer carries, and the pages shown for refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Request, Response
from litestar.enums import MediaType
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.response import Redirect
from litestar.utils.scope.state import ScopeState
from markupsafe import Markup

from bricqs_api.console.session import NotSignedIn, ScopeMissing

# Scripts and styles come from /console/static only: no inline script can run, so an
# injected one cannot either. Charts are inline SVG, which needs no source of its own.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _time(value: datetime | None) -> Markup:
    """A <time> in UTC; static/time.js shows it in the browser's zone, with UTC on hover."""
    if value is None:
        return Markup("—")
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{0}" title="{1} UTC">{1} UTC</time>').format(
        utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M:%S")
    )


def _json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def _number(value: float | int) -> str:
    if isinstance(value, float) and value != int(value):
        return f"{value:,.2f}"
    return f"{int(value):,}"


_templates = Environment(
    loader=PackageLoader("bricqs_api.console", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters.update(time=_time, json=_json, number=_number, path=lambda s: quote(s, ""))


def csrf_token(request: Request[Any, Any, Any]) -> str:
    """The CSRF token the console's forms carry (set by the CSRF middleware)."""
    token = ScopeState.from_scope(request.scope).csrf_token
    return token if isinstance(token, str) else ""


def page(
    request: Request[Any, Any, Any], template: str, *, status_code: int = 200, **context: Any
) -> Response[str]:
    """A console page rendered from `template`, with what every page shows."""
    html = _templates.get_template(template).render(
        csrf_token=csrf_token(request), path=request.url.path, **context
    )
    return Response(html, media_type=MediaType.HTML, status_code=status_code)


def add_security_headers(response: Response[Any]) -> Response[Any]:
    """After every console handler: the CSP and its companions."""
    response.headers.update(SECURITY_HEADERS)
    return response


def _refusal(request: Request[Any, Any, Any], status: int, message: str) -> Response[str]:
    response = page(
        request, "refused.html", status_code=status, user=None, message=message, status=status
    )
    return add_security_headers(response)


def not_signed_in(request: Request[Any, Any, Any], exc: NotSignedIn) -> Response[Any]:
    """Reading pages send the visitor to sign in; a form post is refused outright."""
    del exc
    if request.method == "GET":
        response: Response[Any] = Redirect("/console/sign-in", status_code=303)
        return add_security_headers(response)
    return _refusal(request, 401, "Your session has ended. Sign in again.")


def scope_missing(request: Request[Any, Any, Any], exc: ScopeMissing) -> Response[Any]:
    """403 naming the scope the signed-in key lacks."""
    return _refusal(request, 403, f"This needs a key with the {exc.scope} scope.")


def csrf_refused(request: Request[Any, Any, Any], exc: PermissionDeniedException) -> Response[Any]:
    """403 for a form posted without the page's CSRF token."""
    del exc
    return _refusal(request, 403, "The form was not sent from a console page. Reload and retry.")


def not_found(request: Request[Any, Any, Any], exc: NotFoundException) -> Response[Any]:
    """404 as a console page, naming what is missing."""
    return _refusal(request, 404, exc.detail)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    NotFoundException: not_found,
    NotSignedIn: not_signed_in,
    ScopeMissing: scope_missing,
    PermissionDeniedException: csrf_refused,
}
