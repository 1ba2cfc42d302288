"""Deriving facts from events (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from bricqs.ids import fact_id_for_event
from bricqs.schemas import Envelope, Fact

CUSTOM_FACT_PREFIX = "custom."

HISTORICAL_MARK = "historical"
"""The property, `true`, of a system fact caused by a historical import (docs/import.md):
recorded like any other, owed no webhook."""


def is_historical(fact: Fact) -> bool:
    """Whether a system fact is an outcome of a historical import."""
    return fact.properties.get(HISTORICAL_MARK) is True


def custom_fact_type(event_name: str) -> str:
    """The fact type of an application event: `custom.<event_name>`."""
    return CUSTOM_FACT_PREFIX + event_name


def derive_fact(envelope: Envelope) -> Fact:
    """The one custom fact of an event; a pure function, so redelivery derives it again."""
    return Fact(
        fact_id=fact_id_for_event(envelope.event_id),
        fact_type=custom_fact_type(envelope.event_name),
        project_id=envelope.project_id,
        environment=envelope.environment,
        participant_id=envelope.participant_id,
        event_id=envelope.event_id,
        properties=envelope.properties,
        occurred_at=envelope.occurred_at,
    )


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value, for the event catalog."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
