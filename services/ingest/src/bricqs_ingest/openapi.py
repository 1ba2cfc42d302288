"""The ingest service's OpenAPI document, served at /schema/openapi.json.

The handlers read raw bodies (validation reports every problem with its field path, which
typed bodies cannot), so the document is written here from documentation-only schemas
rather than inferred from handler signatures. `tests/ingest/test_openapi.py` fuzzes the
live service against it with schemathesis, which keeps the two in step.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Response, get
from msgspec import Meta

from bricqs.validation import MAX_BATCH_EVENTS
from bricqs.web.auth import SECURITY_SCHEMES
from bricqs.web.problems import PROBLEM_MEDIA_TYPE, FieldProblem, ProblemDocument
from bricqs_ingest.context import IMPORT_SCOPE, IMPORT_SECURITY, INGEST_SCOPE, INGEST_SECURITY

EventName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$",
        examples=["purchase_completed"],
    ),
]
ParticipantId = Annotated[
    str, Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")
]
IdempotencyKey = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_\-:.]{1,255}$")]
Timestamp = Annotated[
    str,
    Meta(
        extra_json_schema={"format": "date-time"},
        description="ISO 8601; naive is UTC; at most 1 h ahead",
    ),
]


class Event(msgspec.Struct, kw_only=True):
    """An application event. Encoded, at most 32 KiB; properties nest at most 10 deep."""

    event_name: EventName
    participant_id: ParticipantId
    properties: dict[str, Any] | None = None
    timestamp: Timestamp | None = None
    idempotency_key: IdempotencyKey | None = None
    # The names Bricqs' guides use. Either name of a field may be given; both given with
    # different values is 422 `alias_conflict`. They are optional here only because
    # `event_name` is required: one of `event_name`/`event_type` must be present.
    event_type: Annotated[EventName, Meta(description="Alias of event_name")] | None = None
    attributes: Annotated[dict[str, Any], Meta(description="Alias of properties")] | None = None
    occurred_at: Annotated[Timestamp, Meta(description="Alias of timestamp")] | None = None


class Batch(msgspec.Struct, kw_only=True):
    """Up to 100 events; each is validated and queued on its own."""

    events: Annotated[list[Event], Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]
    historical: Annotated[
        bool,
        Meta(
            description="A historical import: events may be older than live ones, are"
            " processed after live traffic and cause no webhooks (docs/import.md)."
        ),
    ] = False


class Accepted(msgspec.Struct, kw_only=True):
    """An event on the queue (or the original, for a repeated idempotency key)."""

    accepted: bool
    duplicate: bool
    message_id: str | None
    """The stream entry; null for a duplicate whose original came through the sync
    endpoint, which stores events without queueing them."""
    event_id: str


class EventError(msgspec.Struct, kw_only=True):
    """Why one event of a batch was rejected."""

    code: str
    detail: str
    errors: list[FieldProblem] | None = None


class BatchResult(msgspec.Struct, kw_only=True):
    """The outcome of one event of a batch, at its index."""

    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    message_id: str | None = None
    event_id: str | None = None
    error: EventError | None = None


class BatchAccepted(msgspec.Struct, kw_only=True):
    """Per-event results in input order."""

    accepted: int
    rejected: int
    duplicates: int
    message_ids: list[str]
    results: list[BatchResult]


class Processed(msgspec.Struct, kw_only=True):
    """The event, its fact and their effects are committed."""

    event_id: str
    fact_id: str
    fact_type: str
    processed_at: str | None
    duplicate: bool
    effects: dict[str, Any]


# The problem answers are the shared ones, named as in the api service's document.
_PROBLEM = "#/components/schemas/ProblemDocument"


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _PROBLEM}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_COMMON = {
    "400": _problem("Malformed JSON, empty body, corrupt gzip"),
    "401": _problem("Missing, malformed, unknown or revoked API key or participant token"),
    "403": _problem(
        "insufficient_scope: the key lacks the `ingest` scope; participant_mismatch: a"
        " participant token sent another participant's event; historical_required: a key"
        " with `import` alone sent a live batch"
    ),
    "409": _problem("Idempotency key reused with another payload"),
    "413": _problem("Body (or inflated gzip body) over the limit"),
    "415": _problem("Content-Encoding other than gzip"),
    "422": _problem("Validation failed; `errors` lists every problem"),
    "429": _problem("Rate limit of the API key; see Retry-After"),
    "503": _problem("Queue or database unavailable, or backpressure; see Retry-After"),
}
_HEADERS = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_\-:.]{1,255}$"},
    }
]


def _operation(
    summary: str,
    body: str,
    responses: dict[str, Any],
    op_id: str,
    *,
    imports: bool = False,
) -> dict[str, Any]:
    also = f"; a key with `{IMPORT_SCOPE}` sends historical batches only" if imports else ""
    return {
        "post": {
            "operationId": op_id,
            "summary": summary,
            "description": f"Needs a key with the `{INGEST_SCOPE}` scope, or a participant"
            f" token (for its own participant's events only){also}.",
            # The route's own declaration, which `authenticate` enforces.
            "security": INGEST_SECURITY + (IMPORT_SECURITY if imports else []),
            "parameters": _HEADERS,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}
                },
            },
            "responses": {**_COMMON, **responses},
        }
    }


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the Events API."""
    _, components = msgspec.json.schema_components(
        [Event, Batch, Accepted, BatchAccepted, Processed, ProblemDocument],
        ref_template="#/components/schemas/{name}",
    )
    batch_422 = {
        **_COMMON["422"],
        "content": {
            PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _PROBLEM}},
            "application/json": {"schema": {"$ref": "#/components/schemas/BatchAccepted"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bricqs Events API",
            "version": "1.0.0",
            "description": "Ingest application events; see the README for the rules.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The same API key as `Authorization: Bearer bq_…`",
                },
                **{name: scheme.to_schema() for name, scheme in SECURITY_SCHEMES.items()},
            },
        },
        "security": [{"apiKey": []}, {"bearer": []}],
        "paths": {
            "/api/v1/ingest/events": _operation(
                "Queue one event", "Event", {"202": _ok("Queued", "Accepted")}, "ingestEvent"
            ),
            "/api/v1/ingest/events/batch": _operation(
                "Queue up to 100 events",
                "Batch",
                {
                    "202": _ok("At least one event accepted or duplicate", "BatchAccepted"),
                    "422": batch_422,
                },
                "ingestBatch",
                imports=True,
            ),
            "/api/v1/ingest/events/sync": _operation(
                "Process one event now",
                "Event",
                {"200": _ok("Processed", "Processed")},
                "ingestSync",
            ),
        },
    }


_DOCUMENT = msgspec.json.encode(build_document())


@get("/schema/openapi.json", include_in_schema=False, sync_to_thread=False)
def openapi_document() -> Response[bytes]:
    """The OpenAPI document."""
    return Response(_DOCUMENT, media_type="application/json")
