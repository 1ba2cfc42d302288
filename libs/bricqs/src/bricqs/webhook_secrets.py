"""Webhook signing secrets encrypted at rest (AES-256-GCM), with keys that rotate.

`WEBHOOK_SECRETS_KEYS` lists `id:key` pairs, comma-separated, each key 32 bytes in
URL-safe base64 (`bricqs_secrets_key()` or `openssl rand -base64 32 | tr '+/' '-_'`). The
first pair encrypts; every pair decrypts. To rotate: put a new pair first and keep the old
one after it; the dispatcher re-encrypts every endpoint's secrets under the new key within
a minute (`bricqs_dispatcher_secrets_reencrypted_total`), after which the old pair can go.
The same value must be given to the api (which encrypts new secrets) and the dispatcher
(which decrypts them to sign, and re-encrypts).

A stored secret reads `enc1:<key id>:<base64 of nonce and ciphertext>`; the endpoint's id
is the associated data, so a ciphertext copied onto another endpoint does not decrypt.
A stored secret without that prefix is one written before encryption (or with no key
set): it is used as it is and encrypted by the dispatcher's next sweep.
"""

from __future__ import annotations

import base64
import functools
import os
from typing import Annotated

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from msgspec import Meta

PREFIX = "enc1:"

WebhookSecretsKeys = Annotated[
    str,
    Meta(
        pattern=r"^\s*([A-Za-z0-9_-]+:[A-Za-z0-9_-]{43}=?\s*(,\s*|$))*$",
        description="Keys that encrypt webhook signing secrets at rest: `id:base64key`,"
        " comma-separated, the first encrypts (see README, webhooks). Empty: stored in clear.",
        extra={"secret": True},
    ),
]


class SecretKeyError(ValueError):
    """A stored secret cannot be decrypted with the keys given (the message names the
    key id, never the secret)."""


def new_key() -> str:
    """A fresh key in the setting's form (without its id)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class SecretBox:
    """Encrypts and decrypts endpoint secrets with the configured keys."""

    def __init__(self, keys: str) -> None:
        self._keys: dict[str, AESGCM] = {}
        self.primary: str | None = None
        for pair in filter(None, (p.strip() for p in keys.split(","))):
            key_id, sep, encoded = pair.partition(":")
            if not sep or not key_id or ":" in key_id:
                raise ValueError("each key is `id:base64key`")
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except ValueError as exc:
                raise ValueError(f"key {key_id!r} is not base64") from exc
            if len(raw) != 32:
                raise ValueError(f"key {key_id!r} is not 32 bytes")
            self._keys[key_id] = AESGCM(raw)
            self.primary = self.primary or key_id

    def seal(self, secret: str, endpoint_id: str) -> str:
        """The stored form of `secret`: encrypted under the first key, or as it is
        when no key is set."""
        if self.primary is None:
            return secret
        nonce = os.urandom(12)
        sealed = self._keys[self.primary].encrypt(nonce, secret.encode(), endpoint_id.encode())
        return f"{PREFIX}{self.primary}:{base64.b64encode(nonce + sealed).decode()}"

    @property
    def key_ids(self) -> list[str]:
        """The ids of every key held, the first one first."""
        return list(self._keys)

    def reseal(self, stored: str, endpoint_id: str) -> str:
        """A stored value sealed under the first key (as it is when that is so already, or
        when its key is not held)."""
        if stored.startswith(f"{PREFIX}{self.primary}:"):
            return stored
        try:
            return self.seal(self.open(stored, endpoint_id), endpoint_id)
        except SecretKeyError:
            return stored

    def open(self, stored: str, endpoint_id: str) -> str:
        """The secret a stored value holds."""
        if not stored.startswith(PREFIX):
            return stored
        key_id, _, data = stored.removeprefix(PREFIX).partition(":")
        key = self._keys.get(key_id)
        if key is None:
            raise SecretKeyError(f"no key {key_id!r} in WEBHOOK_SECRETS_KEYS")
        raw = base64.b64decode(data)
        try:
            plain: bytes = key.decrypt(raw[:12], raw[12:], endpoint_id.encode())
            return plain.decode()
        except Exception as exc:  # InvalidTag: not this endpoint's, or altered
            raise SecretKeyError(f"a secret under key {key_id!r} does not decrypt") from exc


@functools.lru_cache(maxsize=4)
def secret_box(keys: str) -> SecretBox:
    """The box of a setting's value, built once."""
    return SecretBox(keys)
