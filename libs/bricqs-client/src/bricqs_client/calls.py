"""The direct calls (reads, actions, definitions, `track_sync`) as plain descriptions —
method, path, body and how to read the answer. Each function here is also a method of
`Client` (answering) and `AsyncClient` (to await), with the same parameters, so both
send the same requests and decode the same types."""

from __future__ import annotations

import uuid
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


def _new_key() -> str:
    return f"s-{uuid.uuid4().hex}"


def track_sync(
    event_name: str,
    participant_id: str,
    properties: Mapping[str, Any] | None = None,
    timestamp: datetime | str | None = None,
    idempotency_key: str | None = None,
) -> Call[SyncResult]:
    """Process one event now; the answer carries its fact and mechanics effects. It
    carries an idempotency key (one is made when none is given), so a retry is safe."""
    body: dict[str, Any] = {
        "event_name": event_name,
        "participant_id": participant_id,
        "idempotency_key": idempotency_key or _new_key(),
    }
    if properties is not None:
        body["properties"] = properties
    if timestamp is not None:
        body["timestamp"] = timestamp
    path = "/api/v1/ingest/events/sync"
    return Call("ingest", "POST", path, _decoder(SyncResult), _encode(body))


def participant_state(participant_id: str) -> Call[ParticipantState]:
    """Points, badges, challenges, streaks and tiers in one read."""
    return Call("api", "GET", _participant(participant_id, "state"), _decoder(ParticipantState))


def points(participant_id: str) -> Call[PointsBalance]:
    """Balance and lifetime totals."""
    return Call("api", "GET", _participant(participant_id, "points"), _decoder(PointsBalance))


def badges(participant_id: str) -> Call[BadgeState]:
    """Earned badges and progress towards the others."""
    return Call("api", "GET", _participant(participant_id, "badges"), _decoder(BadgeState))


def participant_part(
    participant_id: str, part: Literal["challenges", "streaks", "tier"]
) -> Call[list[dict[str, Any]]]:
    """Challenge progress, streaks or tier levels of a participant."""
    return Call("api", "GET", _participant(participant_id, part), _items)


def transactions(participant_id: str, cursor: str | None = None, limit: int = 50) -> Call[Page]:
    """The points ledger, newest first."""
    params = _drop_none(cursor=cursor, limit=limit)
    path = _participant(participant_id, "points/transactions")
    return Call("api", "GET", path, _decoder(Page), params=params)


def facts(
    participant_id: str, cursor: str | None = None, limit: int = 50, fact_type: str | None = None
) -> Call[Page]:
    """The participant's facts (custom and system), newest first."""
    params = _drop_none(cursor=cursor, limit=limit, fact_type=fact_type)
    return Call("api", "GET", _participant(participant_id, "facts"), _decoder(Page), params=params)


def leaderboard(code: str, period: Period | None = None, limit: int = 10) -> Call[Leaderboard]:
    """The top of a leaderboard (its own period unless `period` is given)."""
    path = f"/api/v1/gamify/leaderboards/{_segment(code)}"
    params = _drop_none(period=period, limit=limit)
    return Call("api", "GET", path, _decoder(Leaderboard), params=params)


def rank(code: str, participant_id: str, period: Period | None = None) -> Call[Rank]:
    """One participant's rank (NotFoundError `not_ranked` when unscored)."""
    path = f"/api/v1/gamify/leaderboards/{_segment(code)}/rank/{_segment(participant_id)}"
    return Call("api", "GET", path, _decoder(Rank), params=_drop_none(period=period))


def _points_change(
    direction: str, participant_id: str, amount: int, reason: str, key: str | None
) -> Call[PointsChange]:
    body = {
        "participant_id": participant_id,
        "amount": amount,
        "reason": reason,
        "idempotency_key": key or _new_key(),
    }
    path = f"/api/v1/gamify/points/{direction}"
    return Call("api", "POST", path, _decoder(PointsChange), _encode(body))


def award_points(
    participant_id: str, amount: int, reason: str = "", idempotency_key: str | None = None
) -> Call[PointsChange]:
    """Award points by hand (under an idempotency key, made when none is given)."""
    return _points_change("award", participant_id, amount, reason, idempotency_key)


def deduct_points(
    participant_id: str, amount: int, reason: str = "", idempotency_key: str | None = None
) -> Call[PointsChange]:
    """Deduct points (ConflictError `insufficient_balance` past the balance)."""
    return _points_change("deduct", participant_id, amount, reason, idempotency_key)


def award_badge(participant_id: str, badge_code: str) -> Call[BadgeAward]:
    """Award a badge by hand (`awarded` is False when the participant had it)."""
    body = {"participant_id": participant_id, "badge_code": badge_code}
    # Awarding a badge twice changes nothing, so a retry is safe.
    return Call("api", "POST", "/api/v1/gamify/badges/award", _decoder(BadgeAward), _encode(body))


def _admin(kind: DefinitionKind, code: str | None = None) -> str:
    base = f"/api/v1/gamify/admin/{kind}/"
    return base if code is None else base + _segment(code)


def create_definition(kind: DefinitionKind, body: Mapping[str, Any]) -> Call[Definition]:
    """Create a points rule, badge, challenge, streak, leaderboard or tier."""
    # Not retried: a create that reached the server would come back as definition_exists.
    return Call("api", "POST", _admin(kind), _definition, _encode(body), retry=False)


def list_definitions(
    kind: DefinitionKind, include_archived: bool = False
) -> Call[list[Definition]]:
    """Every definition of a kind (active ones unless `include_archived`)."""
    params = {"include_archived": "true"} if include_archived else {}
    return Call("api", "GET", _admin(kind), _definitions, params=params)


def get_definition(kind: DefinitionKind, code: str) -> Call[Definition]:
    """One definition by code."""
    return Call("api", "GET", _admin(kind, code), _definition)


def update_definition(kind: DefinitionKind, code: str, body: Mapping[str, Any]) -> Call[Definition]:
    """Replace a definition (its version goes up)."""
    # A full replace: sending it twice leaves the same definition.
    return Call("api", "PUT", _admin(kind, code), _definition, _encode({**body, "code": code}))


def archive_definition(kind: DefinitionKind, code: str) -> Call[Definition]:
    """Archive a definition: it stops applying; its history stays."""
    return Call("api", "DELETE", _admin(kind, code), _definition)


SURFACE = (
    track_sync,
    participant_state,
    points,
    badges,
    participant_part,
    transactions,
    facts,
    leaderboard,
    rank,
    award_points,
    deduct_points,
    award_badge,
    create_definition,
    list_definitions,
    get_definition,
    update_definition,
    archive_definition,
)
"""Every direct call; both clients offer each as a method of the same name."""
