"""Participant attributes set through the api: names, value types and size are bounded,
because leaderboards group by them and every participant row carries them (pure)."""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from bricqs.validation import FieldError

MAX_ATTRIBUTES = 32
MAX_NAME = 64
MAX_STRING = 256
MAX_ENCODED = 4096
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def attribute_errors(attributes: dict[str, Any]) -> list[FieldError]:
    """What is wrong with `attributes` ([] when valid), each error naming the attribute
    (`attributes.NAME`) with a machine-readable code."""
    errors: list[FieldError] = []

    def fail(name: str, code: str, message: str) -> None:
        errors.append(FieldError(f"attributes.{name}".rstrip("."), message, code))

    if len(attributes) > MAX_ATTRIBUTES:
        fail("", "too_many_attributes", f"At most {MAX_ATTRIBUTES} attributes.")
    for name, value in attributes.items():
        if not _NAME.match(name):
            fail(name, "invalid_attribute_name", "Names are letters, digits and _, up to 64.")
        elif isinstance(value, str):
            if len(value) > MAX_STRING or _CONTROL.search(value) or not value:
                fail(
                    name,
                    "invalid_attribute_value",
                    f"Strings are 1 to {MAX_STRING} printable characters.",
                )
        elif isinstance(value, float) and not math.isfinite(value):
            fail(name, "invalid_attribute_value", "Numbers must be finite.")
        elif value is not None and not isinstance(value, bool | int | float):
            fail(name, "invalid_attribute_type", "Values are strings, numbers, booleans or null.")
    if not errors and len(msgspec.json.encode(attributes)) > MAX_ENCODED:
        fail("", "attributes_too_large", f"Attributes take at most {MAX_ENCODED} bytes of JSON.")
    return errors
