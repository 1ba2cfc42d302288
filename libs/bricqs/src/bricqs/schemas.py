"""Wire and storage schemas (msgspec Structs), with their encoders and decoders.

Schemas only ever gain fields with defaults, so an envelope written by an older ingest is
read by a newer processor and the other way round (msgspec's schema-evolution rules).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One public event, as the Events API accepts it, after validation."""

    event_name: str
    participant_id: str
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    timestamp: datetime | None = None
    idempotency_key: str | None = None


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """The stream entry: an accepted event plus what ingest knows about it."""

    event_id: str
    project_id: str
    environment: str
    event_name: str
    participant_id: str
    properties: dict[str, Any]
    occurred_at: datetime
    """The event's timestamp, or the receive time when the client gave none."""
    received_at: datetime
    idempotency_key: str | None = None
    payload_hash: str | None = None
    """Digest of what the client sent, to tell a retry from a conflicting reuse of a key."""
    historical: bool = False
    """Sent as a historical import: its outcomes are recorded without webhooks."""


class Fact(msgspec.Struct, frozen=True, kw_only=True):
    """A fact derived from an event (or, later, from a mechanic's outcome)."""

    fact_id: str
    fact_type: str
    project_id: str
    environment: str
    participant_id: str
    event_id: str
    properties: dict[str, Any]
    occurred_at: datetime


# The stream carries envelopes as MessagePack in one field: compact, typed datetimes,
# and one C call each way.
ENVELOPE_FIELD = b"e"
envelope_encoder = msgspec.msgpack.Encoder()
envelope_decoder = msgspec.msgpack.Decoder(Envelope)
json_encoder = msgspec.json.Encoder()
json_decoder = msgspec.json.Decoder()


def encode_envelope(envelope: Envelope) -> bytes:
    """MessagePack bytes of an envelope, for XADD."""
    return envelope_encoder.encode(envelope)


def decode_envelope(data: bytes) -> Envelope:
    """An envelope from its stream bytes; raises msgspec.DecodeError on bad input."""
    return envelope_decoder.decode(data)
