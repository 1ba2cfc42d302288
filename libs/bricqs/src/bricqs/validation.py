"""Validation of public events (SPEC §3), reporting every problem with its field path.

Decoding is untyped (`msgspec.json.decode` to dicts) and the rules are checked here by
hand, so that one request gets the whole list of what is wrong, each with a stable code,
instead of the first type error only.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from bricqs.schemas import Event

MAX_EVENT_BYTES = 32 * 1024
MAX_PROPERTIES_DEPTH = 10
MAX_FUTURE = timedelta(hours=1)
MAX_BATCH_EVENTS = 100

EVENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}")
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_\-:.]{1,255}")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
# The names Bricqs' guides use, accepted as aliases of the seed page's (primary) names.
ALIASES = {"event_name": "event_type", "properties": "attributes", "timestamp": "occurred_at"}


class FieldError(msgspec.Struct, frozen=True):
    """One problem with one field of a request."""

    field: str
    message: str
    code: str


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def field_value(obj: dict[str, Any], name: str) -> Any:
    """The value of field `name`, given under its primary name or its alias."""
    value = obj.get(name)
    alias = ALIASES.get(name)
    return obj.get(alias) if value is None and alias is not None else value


def _sent_name(obj: dict[str, Any], name: str) -> str:
    """The name the client used for field `name`, for error paths."""
    alias = ALIASES.get(name)
    return alias if alias is not None and obj.get(name) is None and alias in obj else name


def _alias_conflicts(obj: dict[str, Any], prefix: str) -> list[FieldError]:
    return [
        FieldError(
            _join(prefix, alias), f"differs from {name}; give one, or both alike", "alias_conflict"
        )
        for name, alias in ALIASES.items()
        if obj.get(name) is not None and obj.get(alias) is not None and obj[name] != obj[alias]
    ]


def _check_string(
    errors: list[FieldError], value: Any, field: str, *, max_length: int
) -> str | None:
    if not isinstance(value, str):
        errors.append(FieldError(field, "must be a string", "invalid_type"))
        return None
    if not value:
        errors.append(FieldError(field, "must not be empty", "too_short"))
        return None
    if len(value) > max_length:
        errors.append(FieldError(field, f"must be at most {max_length} characters", "too_long"))
        return None
    return value


def _properties_problem(value: Any, depth: int) -> tuple[str, str] | None:
    """Why `value` (a container at nesting `depth`) cannot be stored, or None when it can.

    PostgreSQL's jsonb refuses NUL characters and MessagePack refuses integers beyond
    64 bits, so both are refused here, where the client can still be told.
    """
    if isinstance(value, dict | list):
        if depth > MAX_PROPERTIES_DEPTH:
            return "too_deep", f"must not nest deeper than {MAX_PROPERTIES_DEPTH} levels"
        items = value.values() if isinstance(value, dict) else value
        if isinstance(value, dict) and any("\x00" in key for key in value):
            return "invalid_character", "keys must not contain NUL characters"
        for item in items:
            problem = _properties_problem(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, str):
        if "\x00" in value:
            return "invalid_character", "strings must not contain NUL characters"
    elif isinstance(value, int) and not _INT64_MIN <= value <= _UINT64_MAX:
        return "number_out_of_range", "integers must fit in 64 bits"
    return None


# The field-error code of each kind of refused timestamp, by a word of its message.
_TIME_CODES = (("future", "in_future"), ("older", "too_old"))


def parse_timestamp(value: str, now: datetime, oldest: datetime | None = None) -> datetime | str:
    """The UTC datetime of an ISO 8601 string, or an error message; `oldest` is the
    earliest time accepted (None: any past time)."""
    try:
        parsed = datetime.fromisoformat(value)
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        return "must be an ISO 8601 date-time"
    except OverflowError:  # e.g. year 1 at +10:00 is year 0 in UTC
        return "must be an ISO 8601 date-time within years 1-9999 in UTC"
    if parsed > now + MAX_FUTURE:
        return "must not be more than 1 hour in the future"
    if oldest is not None and parsed < oldest:
        return f"must not be older than {oldest.isoformat()} (send older events as historical)"
    return parsed


def parse_event(
    obj: Any,
    *,
    now: datetime,
    prefix: str = "",
    check_size: bool = False,
    idempotency_key: str | None = None,
    oldest: datetime | None = None,
) -> Event | list[FieldError]:
    """The Event in a decoded JSON value, or every rule it breaks.

    `prefix` is prepended to field paths (`events[3]` in a batch). `check_size` encodes
    the event again to enforce the 32 KiB limit, for callers whose body limit does not
    already imply it. `idempotency_key` is the one from the request header, if any.
    `oldest` is the earliest timestamp accepted (None: any past time).
    """
    if not isinstance(obj, dict):
        return [FieldError(prefix or "body", "must be a JSON object", "invalid_type")]
    errors = _alias_conflicts(obj, prefix)

    event_name = _required_string(errors, obj, prefix, "event_name", max_length=100)
    if event_name is not None and not EVENT_NAME.fullmatch(event_name):
        errors.append(
            FieldError(
                _join(prefix, _sent_name(obj, "event_name")),
                "must start with a letter or digit, then letters, digits, '_', '.', ':' or '-'",
                "invalid_format",
            )
        )

    participant_id = _required_string(errors, obj, prefix, "participant_id", max_length=255)
    if participant_id is not None and CONTROL_CHARACTERS.search(participant_id):
        errors.append(
            FieldError(
                _join(prefix, "participant_id"),
                "must not contain control characters",
                "invalid_character",
            )
        )

    properties = field_value(obj, "properties")
    properties_field = _join(prefix, _sent_name(obj, "properties"))
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        errors.append(FieldError(properties_field, "must be an object", "invalid_type"))
    else:
        problem = _properties_problem(properties, 1)
        if problem:
            errors.append(FieldError(properties_field, problem[1], problem[0]))

    timestamp: datetime | None = None
    raw_timestamp = field_value(obj, "timestamp")
    timestamp_field = _join(prefix, _sent_name(obj, "timestamp"))
    if raw_timestamp is not None:
        if not isinstance(raw_timestamp, str):
            errors.append(FieldError(timestamp_field, "must be an ISO 8601 string", "invalid_type"))
        else:
            parsed = parse_timestamp(raw_timestamp, now, oldest)
            if isinstance(parsed, str):
                code = next((c for w, c in _TIME_CODES if w in parsed), "invalid_format")
                errors.append(FieldError(timestamp_field, parsed, code))
            else:
                timestamp = parsed

    if "historical" in obj:
        # Only a whole batch is imported as history; ignored here, the event would go
        # live, with webhooks, which is what its sender meant to avoid.
        errors.append(
            FieldError(
                _join(prefix, "historical"),
                "is a field of the batch body (POST /ingest/events/batch), not of an event",
                "batch_field",
            )
        )

    key = obj.get("idempotency_key")
    if key is not None:
        if not isinstance(key, str) or not IDEMPOTENCY_KEY.fullmatch(key):
            errors.append(
                FieldError(
                    _join(prefix, "idempotency_key"),
                    "must be 1-255 characters of letters, digits, '_', '-', ':' or '.'",
                    "invalid_format",
                )
            )
            key = None
        elif idempotency_key is not None and key != idempotency_key:
            errors.append(
                FieldError(
                    _join(prefix, "idempotency_key"),
                    "differs from the Idempotency-Key header",
                    "idempotency_key_mismatch",
                )
            )
    else:
        key = idempotency_key

    if check_size and not errors and len(msgspec.json.encode(obj)) > MAX_EVENT_BYTES:
        errors.append(
            FieldError(
                prefix or "body", f"encoded event exceeds {MAX_EVENT_BYTES} bytes", "too_large"
            )
        )

    if errors:
        return errors
    assert event_name is not None and participant_id is not None
    return Event(
        event_name=event_name,
        participant_id=participant_id,
        properties=properties,
        timestamp=timestamp,
        idempotency_key=key,
    )


def _required_string(
    errors: list[FieldError], obj: dict[str, Any], prefix: str, name: str, *, max_length: int
) -> str | None:
    value = field_value(obj, name)
    if value is None:
        errors.append(FieldError(_join(prefix, name), "is required", "required"))
        return None
    return _check_string(errors, value, _join(prefix, _sent_name(obj, name)), max_length=max_length)


def check_header_idempotency_key(value: str | None) -> FieldError | None:
    """An error when the `Idempotency-Key` header is present but malformed."""
    if value is None or IDEMPOTENCY_KEY.fullmatch(value):
        return None
    return FieldError(
        "Idempotency-Key",
        "must be 1-255 characters of letters, digits, '_', '-', ':' or '.'",
        "invalid_format",
    )
