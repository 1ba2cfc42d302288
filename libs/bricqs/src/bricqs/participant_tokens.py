"""Short-lived participant tokens: what a browser holds to act for one participant.

A token is `bqp_<claims>.<signature>`: the claims (project, environment, participant,
expiry) as base64url JSON, signed with HMAC-SHA256 under a server-side secret. Nothing
is stored, so checking one costs no lookup; the price is that a single token cannot be
revoked. Changing the secret invalidates every token at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from bricqs.keys import Environment

TOKEN_PREFIX = "bqp_"  # noqa: S105  # a prefix, not a secret
DEFAULT_TTL_SECONDS = 15 * 60
MAX_TTL_SECONDS = 24 * 60 * 60


class _Claims(msgspec.Struct, frozen=True):
    project_id: str
    environment: Environment
    participant_id: str
    expires_at: int  # Unix seconds


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Claims)


@dataclass(frozen=True)
class ParticipantGrant:
    """Who a valid token acts for, and until when (Unix seconds)."""

    project_id: str
    environment: Environment
    participant_id: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ParticipantTokens:
    """Mints and checks tokens under one secret; an empty secret turns tokens off.

    `clock` gives Unix seconds; tests pass their own instead of sleeping.
    """

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret.encode()
        self._clock = clock

    @property
    def enabled(self) -> bool:
        """Whether a secret is configured."""
        return bool(self._secret)

    def mint(
        self,
        project_id: str,
        environment: Environment,
        participant_id: str,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> tuple[str, ParticipantGrant]:
        """A token for the participant, valid for `ttl_seconds` (1 s to 24 h)."""
        if not self.enabled:
            raise RuntimeError("participant tokens need a secret")
        if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise ValueError("ttl_seconds must be within 1 s and 24 h")
        expires_at = int(self._clock()) + ttl_seconds
        claims = _Claims(project_id, environment, participant_id, expires_at)
        body = _b64(_encoder.encode(claims))
        token = f"{TOKEN_PREFIX}{body}.{self._sign(body)}"
        return token, ParticipantGrant(project_id, environment, participant_id, expires_at)

    def check(self, token: str) -> ParticipantGrant | None:
        """Who the token acts for; None when it is malformed, tampered with, signed under
        another secret or expired."""
        if not self.enabled or not token.startswith(TOKEN_PREFIX):
            return None
        body, _, signature = token[len(TOKEN_PREFIX) :].partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return None
        try:
            claims = _decoder.decode(_unb64(body))
        except (ValueError, msgspec.DecodeError):
            return None
        if claims.expires_at <= self._clock():
            return None
        return ParticipantGrant(
            claims.project_id, claims.environment, claims.participant_id, claims.expires_at
        )

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())
