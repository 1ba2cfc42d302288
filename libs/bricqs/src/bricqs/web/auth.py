"""Who may call a route: the API-key check shared by the HTTP services (X-API-Key, or
Authorization: Bearer), the scope each route declares, and participant tokens.

A router or controller declares its scope once, as its OpenAPI `security` (`requires`):
the document shows it and `authenticate` enforces it, so the two cannot drift. A route
that declares none refuses every caller (fail closed).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import SecurityRequirement, SecurityScheme

from bricqs.auth import AuthUnavailable, ConflictingKeys, KeyCache, presented_key
from bricqs.participant_tokens import TOKEN_PREFIX, ParticipantTokens
from bricqs.storage.tenants import KeyOwner, Scope
from bricqs.validation import FieldError
from bricqs.web.problems import ProblemError

API_KEY_SCHEME = "apiKey"
PARTICIPANT_TOKEN_SCHEME = "participantToken"  # noqa: S105  # a scheme name
SECURITY_SCHEMES = {
    API_KEY_SCHEME: SecurityScheme(
        type="apiKey",
        security_scheme_in="header",
        name="X-API-Key",
        description="An API key (also accepted as `Authorization: Bearer bq_…`); the"
        " scopes listed on an operation are those of which the key needs one.",
    ),
    PARTICIPANT_TOKEN_SCHEME: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="bqp_…",
        description="A participant token (POST /api/v1/gamify/auth/participant-token):"
        " acts for its own participant only.",
    ),
}


def requires(*scopes: Scope, participant_token: bool = False) -> list[SecurityRequirement]:
    """The security of a router or controller: an API key with any of `scopes`, or (with
    `participant_token`) a participant token, limited to its own participant."""
    alternatives: list[SecurityRequirement] = [{API_KEY_SCHEME: [scope]} for scope in scopes]
    if participant_token:
        alternatives.append({PARTICIPANT_TOKEN_SCHEME: []})
    return alternatives


def declared_scopes(handler: HTTPRouteHandler) -> tuple[frozenset[str], bool]:
    """The scopes of which a route's key needs one (empty: none declared) and whether it
    takes participant tokens."""
    scopes: set[str] = set()
    tokens = False
    for requirement in handler.resolve_security():
        scopes.update(requirement.get(API_KEY_SCHEME, ()))
        tokens = tokens or PARTICIPANT_TOKEN_SCHEME in requirement
    return frozenset(scopes), tokens


def insufficient_scope(scopes: frozenset[str]) -> ProblemError:
    """403 naming the scope (or scopes, any one will do) the route needs."""
    named = " or ".join(sorted(scopes))
    return ProblemError(
        403,
        "insufficient_scope",
        f"This route needs a key with the {named} scope.",
        extra={"scope": named},
    )


def participant_mismatch(participant_id: str) -> ProblemError:
    """403: a participant token used for someone else."""
    return ProblemError(
        403,
        "participant_mismatch",
        f"This participant token acts for another participant than {participant_id!r}.",
    )


def check_participant(caller: KeyOwner, participant_id: str) -> None:
    """A participant token may only name its own participant."""
    if caller.participant_id is not None and caller.participant_id != participant_id:
        raise participant_mismatch(participant_id)


def presented_participant_token(authorization: str | None) -> str | None:
    """The participant token of `Authorization: Bearer bqp_…`, if that is what it holds."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token.startswith(TOKEN_PREFIX):
            return token
    return None


async def authenticate(
    connection: ASGIConnection[Any, Any, Any, Any],
    keys: KeyCache,
    retry_after: int,
    tokens: ParticipantTokens | None = None,
) -> KeyOwner:
    """The caller of a request, allowed by its route's declared scope; problem errors for
    missing, bad or uncheckable credentials and for a scope the caller lacks."""
    scopes, takes_tokens = declared_scopes(connection.route_handler)
    if not scopes:
        raise ProblemError(500, "scope_undeclared", "This route declares no scope.")
    headers = connection.headers
    token = presented_participant_token(headers.get("authorization"))
    if token is not None and headers.get("x-api-key") is None:
        return _token_caller(connection, token, scopes, takes_tokens, tokens)
    owner = await _key_owner(
        headers.get("x-api-key"), headers.get("authorization"), keys, retry_after
    )
    if scopes.isdisjoint(owner.scopes):
        raise insufficient_scope(scopes)
    return owner


def _token_caller(
    connection: ASGIConnection[Any, Any, Any, Any],
    token: str,
    scopes: frozenset[str],
    takes_tokens: bool,
    tokens: ParticipantTokens | None,
) -> KeyOwner:
    grant = tokens.check(token) if tokens is not None else None
    if grant is None:
        raise ProblemError(
            401,
            "invalid_participant_token",
            "The participant token is malformed, tampered with, expired or no longer valid.",
        )
    if not takes_tokens:
        raise insufficient_scope(scopes)
    caller = KeyOwner(
        grant.project_id,
        grant.environment,
        # Its rate-limit bucket: one per participant of a tenant (a token has no key).
        key_id=f"participant:{grant.project_id}:{grant.environment}:{grant.participant_id}",
        participant_id=grant.participant_id,
    )
    in_path = connection.path_params.get("participant_id")
    if in_path is not None:
        check_participant(caller, in_path)
    return caller


async def _key_owner(
    api_key: str | None, authorization: str | None, keys: KeyCache, retry_after: int
) -> KeyOwner:
    try:
        key = presented_key(api_key, authorization)
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
