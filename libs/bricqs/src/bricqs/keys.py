"""API keys: generation, format check and hashing.

A key is `bq_live_` or `bq_test_` followed by 40 random base62 characters (238 bits).
Only its SHA-256 is stored, with a short display prefix. A fast hash is right here:
the key is random and long, so there is nothing to brute-force, and ingest can hash
every request cheaply. Lookups go by hash, so a plaintext key is never compared.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from typing import Literal

Environment = Literal["live", "test"]
ENVIRONMENTS: tuple[Environment, ...] = ("live", "test")

_BASE62 = string.ascii_letters + string.digits
_RANDOM_LENGTH = 40
KEY_PATTERN = re.compile(r"^bq_(live|test)_[A-Za-z0-9]{32,128}$")


def generate_key(environment: Environment) -> str:
    """A new plaintext key for `environment`; show it once, store only its hash."""
    body = "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_LENGTH))
    return f"bq_{environment}_{body}"


def hash_key(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).digest()


def display_prefix(key: str) -> str:
    """The part of a key that may be shown again (environment and 4 characters)."""
    return key[:12]


def key_environment(key: str) -> Environment | None:
    """The environment of a well-formed key, or None when the key is malformed."""
    match = KEY_PATTERN.match(key)
    if match is None:
        return None
    return "live" if match.group(1) == "live" else "test"
