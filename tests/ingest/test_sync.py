"""The sync endpoint stores the event, its fact, the participant and the catalog."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar.testing import TestClient

from tests.conftest import Tenant
from tests.ingest.helpers import SYNC


def test_sync_stores_event_fact_participant_and_catalog(
    ingest: TestClient[Any], tenant: Tenant, db: Any
) -> None:
    headers = {"X-API-Key": tenant.live_key}
    first = ingest.post(
        SYNC,
        headers=headers,
        json={
            "event_name": "level_completed",
            "participant_id": "p1",
            "properties": {
                "level": 5,
                "name": "x",
                "tags": ["a"],
                "meta": {"k": 1},
                "ok": True,
                "none": None,
            },
            "timestamp": "2026-04-10T10:30:00Z",
        },
    ).json()
    ingest.post(
        SYNC,
        headers=headers,
        json={
            "event_name": "level_completed",
            "participant_id": "p1",
            "properties": {"level": "six"},
            "timestamp": "2026-04-09T08:00:00Z",
        },
    )
    assert first["effects"] == {}
    event = db.execute(
        "SELECT event_name, participant_id, properties FROM events WHERE project_id = %s"
        " AND event_id = %s",
        (tenant.project_id, first["event_id"]),
    ).fetchone()
    assert event[:2] == ("level_completed", "p1")
    assert event[2]["meta"] == {"k": 1}
    fact = db.execute(
        "SELECT fact_type, event_id, participant_id FROM facts WHERE project_id = %s"
        " AND fact_id = %s",
        (tenant.project_id, first["fact_id"]),
    ).fetchone()
    assert fact == ("custom.level_completed", first["event_id"], "p1")
    participant = db.execute(
        "SELECT first_seen_at, last_seen_at, event_count FROM participants"
        " WHERE project_id = %s AND environment = 'live' AND participant_id = 'p1'",
        (tenant.project_id,),
    ).fetchone()
    assert participant == (
        datetime(2026, 4, 9, 8, tzinfo=UTC),
        datetime(2026, 4, 10, 10, 30, tzinfo=UTC),
        2,
    )
    assert db.execute(
        "SELECT event_count FROM event_catalog WHERE project_id = %s AND event_name = %s",
        (tenant.project_id, "level_completed"),
    ).fetchone() == (2,)
    types = db.execute(
        "SELECT property_key, json_type FROM event_catalog_properties WHERE project_id = %s"
        " ORDER BY 1, 2",
        (tenant.project_id,),
    ).fetchall()
    assert types == [
        ("level", "number"),
        ("level", "string"),
        ("meta", "object"),
        ("name", "string"),
        ("none", "null"),
        ("ok", "boolean"),
        ("tags", "array"),
    ]
