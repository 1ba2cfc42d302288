"""Typed settings read from environment variables, once, at start-up.

Every service declares one `msgspec.Struct` whose fields are its settings. A field's
environment variable is its name in upper case; its `Meta(description=...)` is the
documentation (the README's settings table is generated from it). A value that does not
convert stops the process with a message naming the variable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

S = TypeVar("S", bound=msgspec.Struct)


class SettingsError(Exception):
    """A setting has a value that cannot be used; the message names the variable."""


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return field.upper()


def load_settings(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Build `cls` from the environment; raise SettingsError naming the bad variable."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for field in msgspec.structs.fields(cls):
        value = environ.get(env_name(field.name))
        if value is not None and value != "":
            raw[field.name] = value
    try:
        # strict=False converts the strings of the environment into ints, floats, bools.
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        bad_field = message.rsplit("$.", 1)[-1].strip("`") if "$." in message else ""
        name = env_name(bad_field) if bad_field else "settings"
        raise SettingsError(f"{name}: {message.split(' - at ')[0]}") from exc


def load_or_exit(cls: type[S]) -> S:
    """Like `load_settings`, but print the error and exit 2 (for process start-up)."""
    try:
        return load_settings(cls)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def describe(cls: type[msgspec.Struct]) -> list[tuple[str, str, str]]:
    """(variable, default, description) for each setting, for docs and checks."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    rows = []
    for field in info.fields:
        default = "" if field.default is msgspec.NODEFAULT else repr(field.default)
        typ = field.type
        description = ""
        if isinstance(typ, msgspec.inspect.Metadata) and typ.extra_json_schema:
            description = str(typ.extra_json_schema.get("description", ""))
        rows.append((env_name(field.name), default, description))
    return rows


Positive = Meta(gt=0)

# Shared settings types, so each service declares the same variable the same way.
RedisUrl = Annotated[str, Meta(description="Redis URL for streams, dedupe keys and caches.")]
DatabaseUrl = Annotated[str, Meta(description="PostgreSQL URL (libpq form), the source of truth.")]
DatabaseTransactionPooling = Annotated[
    bool,
    Meta(
        description="DATABASE_URL leads to a transaction pooler (PgBouncer, pool_mode"
        " transaction): no statement timeout is sent at connect, the role's applies"
        " (ALTER ROLE ... SET statement_timeout)."
    ),
]
StreamShards = Annotated[
    int,
    Meta(ge=1, le=1024, description="Number of event streams; events are placed by participant."),
]
StreamShardsPrevious = Annotated[
    int,
    Meta(
        ge=0,
        le=1024,
        description="While changing STREAM_SHARDS, the count before the change (0: no change"
        " under way): ingest holds queued intake (503) until those streams are drained,"
        " processors read max(STREAM_SHARDS, this) streams. See docs/resharding.md.",
    ),
]
LogLevel = Annotated[
    str,
    Meta(
        pattern=r"^(CRITICAL|ERROR|WARNING|INFO|DEBUG)$",
        description="Python logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    ),
]
RetryAfterSeconds = Annotated[
    int, Meta(ge=1, le=3600, description="Retry-After sent with 503 answers.")
]
AuthCacheTtlSeconds = Annotated[
    float, Meta(gt=0, description="How long a key lookup is cached; a revocation takes this long.")
]
ParticipantTokenSecret = Annotated[
    str,
    Meta(
        description="Signs participant tokens (the api mints them, ingest and the api check"
        " them); empty turns them off; changing it invalidates every token at once."
    ),
]
RulesRefreshSeconds = Annotated[
    float,
    Meta(
        ge=0,
        le=300,
        description="How often changed mechanics definitions are looked for (0: at every use).",
    ),
]
WebhooksAllowPrivate = Annotated[
    bool,
    Meta(
        description="Accept webhook URLs that resolve to loopback, private, link-local or"
        " metadata addresses (local runs and tests only)."
    ),
]
RedisClusterMode = Annotated[
    bool,
    Meta(
        description="Use Redis Cluster: REDIS_URL names one node (a seed); every command"
        " keeps to one hash tag."
    ),
]
