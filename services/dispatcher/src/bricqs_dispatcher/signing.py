"""The headers of a webhook request: Standard Webhooks and the Bricqs-compatible ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix, not a secret


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret: its decoded base64 part."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature_headers(
    *,
    message_id: str,
    delivery_id: str,
    event_type: str,
    timestamp: int,
    body: bytes,
    secrets: Sequence[str],
) -> dict[str, str]:
    """Every header that identifies and signs one attempt.

    `webhook-signature` holds one `v1,<base64>` per secret (two while a secret rotates);
    `X-Bricqs-Signature` is the hex HMAC of the body alone, with the current secret.
    """
    signed = f"{message_id}.{timestamp}.".encode() + body
    keys = [secret_key(s) for s in secrets]
    standard = " ".join(
        "v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode()
        for k in keys
    )
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard,
        "x-bricqs-signature": "sha256=" + hmac.new(keys[0], body, hashlib.sha256).hexdigest(),
        "x-bricqs-event": event_type,
        "x-bricqs-delivery": delivery_id,
    }
