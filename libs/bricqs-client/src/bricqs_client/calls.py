"""The direct calls (reads, actions, definitions, `track_sync`) as plain descriptions —
method, path, body and how to read the answer — so the sync and async clients send the
same requests and decode the same types."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import msgspec

from bricqs_client.models import (
    BadgeAward,
    BadgeState,
    Definition,
    DefinitionKind,
    Leaderboard,
    Page,
    ParticipantState,
    Period,
    PointsBalance,
    PointsChange,
    Rank,
    SyncResult,
)

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the decoder of its answer."""

    service: Literal["ingest", "api"]
    method: str
    path: str
    decode: Callable[[bytes], T]
    body: bytes | None = None
    params: Mapping[str, str | int | bool] = field(default_factory=dict)
    retry: bool = True
    """Whether a 429/503/network failure may be retried (the request is idempotent)."""


def _decoder(kind: type[T]) -> Callable[[bytes], T]:
    return msgspec.json.Decoder(kind).decode


class _Items(msgspec.Struct):
    items: list[dict[str, Any]]


def _items(content: bytes) -> list[dict[str, Any]]:
    return msgspec.json.decode(content, type=_Items).items


def _definition_of(raw: dict[str, Any]) -> Definition:
    return msgspec.convert({**raw, "fields": raw}, Definition, strict=False)


def _definition(content: bytes) -> Definition:
    return _definition_of(msgspec.json.decode(content, type=dict[str, Any]))


def _definitions(content: bytes) -> list[Definition]:
    return [_definition_of(raw) for raw in _items(content)]


def _segment(value: str) -> str:
    return quote(value, safe="")


def _participant(pid: str, part: str) -> str:
    return f"/api/v1/gamify/participants/{_segment(pid)}/{part}"


def _drop_none(**params: Any) -> dict[str, str | int | bool]:
    return {k: v for k, v in params.items() if v is not None}


def track_sync(event: Mapping[str, Any]) -> Call[SyncResult]:
    """Process one event before answering; carries an idempotency key, so retries are safe."""
    return Call(
        "ingest", "POST", "/api/v1/ingest/events/sync", _decoder(SyncResult), _encode(event)
    )


def participant_state(pid: str) -> Call[ParticipantState]:
    return Call("api", "GET", _participant(pid, "state"), _decoder(ParticipantState))


def participant_points(pid: str) -> Call[PointsBalance]:
    return Call("api", "GET", _participant(pid, "points"), _decoder(PointsBalance))


def participant_badges(pid: str) -> Call[BadgeState]:
    return Call("api", "GET", _participant(pid, "badges"), _decoder(BadgeState))


def participant_part(
    pid: str, part: Literal["challenges", "streaks", "tier"]
) -> Call[list[dict[str, Any]]]:
    return Call("api", "GET", _participant(pid, part), _items)


def participant_page(
    pid: str,
    part: Literal["points/transactions", "facts"],
    cursor: str | None,
    limit: int,
    fact_type: str | None = None,
) -> Call[Page]:
    params = _drop_none(cursor=cursor, limit=limit, fact_type=fact_type)
    return Call("api", "GET", _participant(pid, part), _decoder(Page), params=params)


def leaderboard(code: str, period: Period | None, limit: int) -> Call[Leaderboard]:
    path = f"/api/v1/gamify/leaderboards/{_segment(code)}"
    return Call(
        "api", "GET", path, _decoder(Leaderboard), params=_drop_none(period=period, limit=limit)
    )


def rank(code: str, pid: str, period: Period | None) -> Call[Rank]:
    path = f"/api/v1/gamify/leaderboards/{_segment(code)}/rank/{_segment(pid)}"
    return Call("api", "GET", path, _decoder(Rank), params=_drop_none(period=period))


def change_points(
    direction: Literal["award", "deduct"], pid: str, amount: int, reason: str, key: str
) -> Call[PointsChange]:
    body = {"participant_id": pid, "amount": amount, "reason": reason, "idempotency_key": key}
    return Call(
        "api", "POST", f"/api/v1/gamify/points/{direction}", _decoder(PointsChange), _encode(body)
    )


def award_badge(pid: str, badge: str) -> Call[BadgeAward]:
    body = {"participant_id": pid, "badge_code": badge}
    # Awarding a badge twice changes nothing, so a retry is safe.
    return Call("api", "POST", "/api/v1/gamify/badges/award", _decoder(BadgeAward), _encode(body))


def _admin(kind: DefinitionKind, code: str | None = None) -> str:
    base = f"/api/v1/gamify/admin/{kind}/"
    return base if code is None else base + _segment(code)


def create_definition(kind: DefinitionKind, body: Mapping[str, Any]) -> Call[Definition]:
    # Not retried: a create that reached the server would come back as definition_exists.
    return Call("api", "POST", _admin(kind), _definition, _encode(body), retry=False)


def list_definitions(kind: DefinitionKind, include_archived: bool) -> Call[list[Definition]]:
    params = {"include_archived": "true"} if include_archived else {}
    return Call("api", "GET", _admin(kind), _definitions, params=params)


def get_definition(kind: DefinitionKind, code: str) -> Call[Definition]:
    return Call("api", "GET", _admin(kind, code), _definition)


def update_definition(kind: DefinitionKind, code: str, body: Mapping[str, Any]) -> Call[Definition]:
    # A full replace: sending it twice leaves the same definition.
    return Call("api", "PUT", _admin(kind, code), _definition, _encode({**body, "code": code}))


def archive_definition(kind: DefinitionKind, code: str) -> Call[Definition]:
    return Call("api", "DELETE", _admin(kind, code), _definition)


def event_body(
    event_name: str,
    participant_id: str,
    properties: Mapping[str, Any] | None,
    timestamp: datetime | str | None,
    idempotency_key: str,
) -> dict[str, Any]:
    """The JSON object of one event for the single and sync endpoints."""
    body: dict[str, Any] = {
        "event_name": event_name,
        "participant_id": participant_id,
        "idempotency_key": idempotency_key,
    }
    if properties is not None:
        body["properties"] = properties
    if timestamp is not None:
        body["timestamp"] = timestamp
    return body
