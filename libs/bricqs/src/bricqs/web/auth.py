"""The API-key check shared by the HTTP services (X-API-Key, or Authorization: Bearer)."""

from __future__ import annotations

from typing import Any

from litestar import Request

from bricqs.auth import AuthUnavailable, ConflictingKeys, KeyCache, presented_key
from bricqs.storage.tenants import KeyOwner
from bricqs.validation import FieldError
from bricqs.web.problems import ProblemError


async def authenticate(
    request: Request[Any, Any, Any], keys: KeyCache, retry_after: int
) -> KeyOwner:
    """The owner of the request's key; problem errors for missing, bad or uncheckable keys."""
    try:
        key = presented_key(request.headers.get("x-api-key"), request.headers.get("authorization"))
    except ConflictingKeys as exc:
        raise ProblemError(
            422,
            "validation_failed",
            "The request is invalid.",
            errors=[
                FieldError("Authorization", "names another key than X-API-Key", "key_conflict")
            ],
        ) from exc
    if not key:
        raise ProblemError(
            401, "missing_api_key", "Pass your API key as X-API-Key or Authorization: Bearer."
        )
    try:
        owner = await keys.owner(key)
    except AuthUnavailable as exc:
        raise ProblemError(
            503,
            "auth_unavailable",
            "Keys cannot be checked right now.",
            headers={"Retry-After": str(retry_after)},
        ) from exc
    if owner is None:
        raise ProblemError(401, "invalid_api_key", "The API key is malformed, unknown or revoked.")
    return owner
