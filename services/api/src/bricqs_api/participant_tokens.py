"""POST /api/v1/gamify/auth/participant-token: a short-lived token a front end holds to
read and act for one participant (see `bricqs.participant_tokens`)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from msgspec import Meta

from bricqs.participant_tokens import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS
from bricqs.web.auth import requires
from bricqs.web.problems import ProblemError
from bricqs_api.context import PROBLEMS, ApiClients, Caller


class ParticipantTokenRequest(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Whom the token acts for, and for how long."""

    participant_id: Annotated[
        str, Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")
    ]
    expires_in: Annotated[int, Meta(ge=1, le=MAX_TTL_SECONDS)] = DEFAULT_TTL_SECONDS
    """Seconds until the token expires (at most 24 h)."""


class ParticipantTokenController(Controller):
    """Tokens for front ends: minted by a server holding a `write` (or `admin`) key."""

    path = "/auth"
    tags = ("auth",)
    security = requires("write", "admin")

    @post("/participant-token", responses=PROBLEMS, status_code=201)
    async def participant_token(
        self,
        data: JSONBody[ParticipantTokenRequest],
        caller: Caller,
        clients: NamedDependency[ApiClients],
    ) -> dict[str, Any]:
        """A token for `participant_id` in the key's project and environment. With
        `Authorization: Bearer <token>` a browser may read that participant's state,
        leaderboards and send that participant's events; nothing else."""
        if not clients.tokens.enabled:
            # Off by configuration, like a route that is not there (not a server fault).
            raise ProblemError(
                404,
                "participant_tokens_disabled",
                "Participant tokens are off: PARTICIPANT_TOKEN_SECRET is not set.",
            )
        token, grant = clients.tokens.mint(
            caller.project_id, caller.environment, data.participant_id, data.expires_in
        )
        return {
            "token": token,
            "participant_id": grant.participant_id,
            "expires_at": grant.expires_at,
            "expires_in": data.expires_in,
        }
