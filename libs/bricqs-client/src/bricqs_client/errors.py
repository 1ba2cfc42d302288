"""Exceptions raised by the client's direct calls (reads, actions, `track_sync`)."""

from __future__ import annotations

from typing import Any

import msgspec

from bricqs_client.models import FieldError


class BricqsError(Exception):
    """Base of every error the client raises."""


class TransportError(BricqsError):
    """The server could not be reached (or kept failing) within the retry bounds."""


class ProblemError(BricqsError):
    """An RFC 9457 problem answer: `status`, the stable `code`, and per-field `errors`."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        errors: tuple[FieldError, ...] = (),
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.extra = extra or {}
        """Other members of the problem document (e.g. `balance` of insufficient_balance)."""


class AuthenticationError(ProblemError):
    """401: the API key is missing, unknown or revoked."""


class NotFoundError(ProblemError):
    """404: no such participant score, definition or route."""


class ConflictError(ProblemError):
    """409: a conflict (definition exists, insufficient balance, idempotency conflict)."""


class ValidationError(ProblemError):
    """422: the request was understood but is invalid; see `errors`."""


class RateLimitedError(ProblemError):
    """429 after the retries: too many requests for this key."""


class UnavailableError(ProblemError):
    """503 after the retries: the engine (Redis or PostgreSQL) is unavailable."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitedError,
    503: UnavailableError,
}


class _Problem(msgspec.Struct, kw_only=True):
    code: str = ""
    detail: str = ""
    title: str = ""
    errors: list[FieldError] | None = None


_decode_problem = msgspec.json.Decoder(_Problem).decode
_decode_any = msgspec.json.Decoder(dict[str, Any]).decode
_KNOWN = frozenset({"type", "title", "status", "detail", "code", "errors"})


def problem_from(status: int, body: bytes) -> ProblemError:
    """The typed exception for an error answer (any body: a non-problem one keeps its text)."""
    try:
        problem = _decode_problem(body)
        extra = {k: v for k, v in _decode_any(body).items() if k not in _KNOWN}
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = body[:200].decode(errors="replace")
        return _BY_STATUS.get(status, ProblemError)(status, f"http_{status}", text)
    return _BY_STATUS.get(status, ProblemError)(
        status,
        problem.code or f"http_{status}",
        problem.detail or problem.title,
        tuple(problem.errors or ()),
        extra,
    )
