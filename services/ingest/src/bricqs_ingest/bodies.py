"""Request bodies and headers as the endpoints read them: gzip, JSON, size limits, the
Idempotency-Key header and the digest that tells a retry from a reuse of a key."""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import msgspec
from litestar import Request, Response

from bricqs.schemas import json_decoder
from bricqs.validation import (
    MAX_EVENT_BYTES,
    check_header_idempotency_key,
    field_value,
)
from bricqs.web.problems import ProblemError

# A single event's body may be pretty-printed; its re-encoded form must fit 32 KiB.
MAX_SINGLE_BODY = 2 * MAX_EVENT_BYTES
MAX_BATCH_BODY = 1024 * 1024
_canonical = msgspec.json.Encoder(order="sorted")
json_encoder = msgspec.json.Encoder()


async def decode_body(request: Request[Any, Any, Any], limit: int) -> tuple[Any, int]:
    """The decoded JSON body and its size once inflated: size limits apply to the event
    as sent, not to its compressed form."""
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        body = gunzip(body, limit)
    elif encoding != "identity":
        raise ProblemError(
            415,
            "unsupported_content_encoding",
            "Send the body plain or with Content-Encoding: gzip.",
        )
    if not body:
        raise ProblemError(400, "empty_body", "The request body is empty; send a JSON object.")
    try:
        return json_decoder.decode(body), len(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ProblemError(400, "malformed_json", f"The body is not valid JSON: {exc}") from exc


def gunzip(body: bytes, limit: int) -> bytes:
    """Inflate a gzip body, stopping at `limit` bytes: a zip bomb costs at most that."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProblemError(400, "malformed_gzip", f"The gzip body is corrupt: {exc}") from exc
    if len(data) > limit:
        raise ProblemError(
            413, "payload_too_large", f"The decompressed body exceeds {limit} bytes."
        )
    if not inflater.eof:
        raise ProblemError(400, "malformed_gzip", "The gzip body is truncated.")
    return data


def header_idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    """The Idempotency-Key header; 422 when it is malformed."""
    value = request.headers.get("idempotency-key")
    error = check_header_idempotency_key(value)
    if error is not None:
        raise ProblemError(422, "validation_failed", "The request is invalid.", errors=[error])
    return value


def payload_hash(obj: dict[str, Any]) -> str:
    """Digest of what the client sent, to tell a retry from another use of the same key
    (either name of an aliased field gives the same digest)."""
    material = [
        field_value(obj, "event_name"),
        obj.get("participant_id"),
        field_value(obj, "properties") or {},
        field_value(obj, "timestamp"),
    ]
    return hashlib.blake2b(_canonical.encode(material), digest_size=16).hexdigest()


def json_response(
    body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> Response[bytes]:
    """A JSON answer."""
    return Response(
        json_encoder.encode(body),
        status_code=status,
        media_type="application/json",
        headers=headers or {},
    )
