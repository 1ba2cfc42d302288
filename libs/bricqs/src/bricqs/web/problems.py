"""RFC 9457 problem details: one exception type, one handler, stable machine codes.

Every error a client can see is `application/problem+json` with `type`, `title`,
`status`, `detail` and `code` (stable, for programs), plus `errors: [{field, message,
code}]` for validation failures.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap
from psycopg import OperationalError
from psycopg.errors import QueryCanceled
from psycopg_pool import PoolTimeout

from bricqs.validation import FieldError
from bricqs.web.metrics import DATABASE_OVERLOADED

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("bricqs.problems")
_encoder = msgspec.json.Encoder()

# Litestar's own HTTP errors (routing, body limits) mapped to our codes.
_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "service_unavailable",
}

# Retry-After bounds for an overloaded database: longer than for an outage, and spread,
# so that clients refused together do not come back together.
OVERLOADED_RETRY_AFTER_SECONDS = (5, 15)


class FieldProblem(msgspec.Struct, kw_only=True):
    """One problem with one field (for the OpenAPI documents)."""

    field: str
    message: str
    code: str


class ProblemDocument(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details with a stable machine code (for the OpenAPI documents)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldProblem] | None = None


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI response entries for the problem answers a route may give."""
    return {
        status: ResponseSpec(
            data_container=ProblemDocument,
            media_type=PROBLEM_MEDIA_TYPE,
            description=HTTPStatus(status).phrase,
            generate_examples=False,
        )
        for status in statuses
    }


class ProblemError(Exception):
    """An error answered to the client as problem details."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = list(errors)
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def problem_body(
    status: int,
    code: str,
    detail: str,
    errors: Sequence[FieldError] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem-details document for an error."""
    body: dict[str, Any] = {
        "type": f"urn:bricqs:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = [msgspec.structs.asdict(e) for e in errors]
    if extra:
        body.update(extra)
    return body


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response[bytes]:
    """A problem-details response."""
    return Response(
        _encoder.encode(problem_body(status, code, detail, errors, extra)),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def _on_problem(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status, exc.code, exc.detail, errors=exc.errors, headers=exc.headers, extra=exc.extra
    )


def _on_http_exception(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = _CODES_BY_STATUS.get(status, "internal_error" if status >= 500 else "bad_request")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    return problem_response(status, code, detail, headers=exc.headers or {})


def _on_database_down(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.warning("database unavailable: %s", exc)
    return problem_response(
        503, "database_unavailable", "The database is unavailable.", headers={"Retry-After": "1"}
    )


def database_overloaded() -> ProblemError:
    """503 `database_overloaded` (counted) for a statement cancelled by its timeout: the
    database is up but slow, so clients are told to wait longer, each a different time."""
    DATABASE_OVERLOADED.inc()
    wait = random.randint(*OVERLOADED_RETRY_AFTER_SECONDS)  # noqa: S311 -- jitter, not secrecy
    return ProblemError(
        503,
        "database_overloaded",
        "The database is overloaded; retry later.",
        headers={"Retry-After": str(wait)},
    )


def _on_database_overloaded(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.warning("statement timeout: %s", exc)
    return _on_problem(request, database_overloaded())


def _on_validation(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Litestar's body validation (typed request bodies) as our 422 with field errors."""
    assert isinstance(exc, ValidationException)
    errors = [
        FieldError(str(item.get("key") or "body"), str(item.get("message", "")), "invalid_value")
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    return problem_response(
        422,
        "validation_failed",
        "The request is invalid.",
        errors=errors or [FieldError("body", str(exc.detail), "invalid_value")],
    )


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "internal_error", "An unexpected error occurred.")


exception_handlers: ExceptionHandlersMap = {
    ProblemError: _on_problem,
    ValidationException: _on_validation,
    QueryCanceled: _on_database_overloaded,
    OperationalError: _on_database_down,
    PoolTimeout: _on_database_down,
    HTTPException: _on_http_exception,
    Exception: _on_unexpected,
}
