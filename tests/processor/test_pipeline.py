"""Events through the real ingest service become events, facts, participants, catalog
rows and mechanics effects in PostgreSQL, exactly once, through a real processor."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from bricqs_devstack.servers import Server
from tests.conftest import Tenant
from tests.processor.conftest import (
    ProcessorFactory,
    add_points_rule,
    points,
    stored,
    wait_until,
)

pytestmark = pytest.mark.slow

NAMES = ("purchase_completed", "lesson.viewed", "level:up")


def _event(i: int) -> dict[str, Any]:
    name = NAMES[i % len(NAMES)]
    properties: dict[str, Any] = {"i": i}
    if name == "purchase_completed":
        properties |= {"amount": 9.5, "currency": "EUR", "items": ["a"], "gift": False}
    elif name == "lesson.viewed":
        properties |= {"lesson": {"id": i}, "note": None}
    return {
        "event_name": name,
        "participant_id": f"user-{i % 7}",
        "properties": properties,
        "timestamp": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
    }


def test_events_from_async_and_batch_endpoints_are_stored_once_with_facts_and_catalog(
    ingest_url: str,
    processors: ProcessorFactory,
    postgres_server: Server,
    tenant: Tenant,
) -> None:
    add_points_rule(postgres_server.url, tenant, "custom.purchase_completed", 10)
    processor = processors.start()
    headers = {"X-API-Key": tenant.live_key}
    sent: list[dict[str, Any]] = [_event(i) for i in range(240)]
    event_ids = []
    with httpx.Client(base_url=ingest_url, headers=headers, timeout=10) as client:
        for body in sent[:90]:
            response = client.post("/api/v1/ingest/events", json=body)
            assert response.status_code == 202, response.text
            event_ids.append(response.json()["event_id"])
        for start in range(90, 240, 50):
            response = client.post(
                "/api/v1/ingest/events/batch", json={"events": sent[start : start + 50]}
            )
            assert response.status_code == 202, response.text
            assert response.json()["accepted"] == 50
            event_ids += [r["event_id"] for r in response.json()["results"]]
    n = len(sent)

    wait_until(
        lambda: stored(postgres_server.url, tenant.project_id).events >= n,
        30,
        "every event to be stored",
        processors.logs,
    )
    with psycopg.connect(postgres_server.url, autocommit=True) as db:
        p = tenant.project_id
        rows = db.execute(
            "SELECT event_id, event_name, participant_id, environment FROM events"
            " WHERE project_id = %s",
            (p,),
        ).fetchall()
        assert sorted(r[0] for r in rows) == sorted(event_ids)
        assert {r[3] for r in rows} == {"live"}
        facts = db.execute(
            "SELECT fact_type, count(*) FROM facts WHERE project_id = %s GROUP BY 1", (p,)
        ).fetchall()
        per_name = n // len(NAMES)
        assert dict(facts) == {
            **{f"custom.{name}": per_name for name in NAMES},
            "points.awarded": per_name,  # the rule below, once per purchase
        }
        fact_ids = db.execute(
            "SELECT count(*) FROM facts f JOIN events e USING (project_id, environment, event_id)"
            " WHERE f.project_id = %s AND f.fact_id = 'fact_' || substr(e.event_id, 5)",
            (p,),
        ).fetchone()
        assert fact_ids == (n,)
        catalog = db.execute(
            "SELECT event_name, event_count FROM event_catalog WHERE project_id = %s", (p,)
        ).fetchall()
        assert dict(catalog) == {name: n // len(NAMES) for name in NAMES}
        types = db.execute(
            "SELECT property_key, json_type FROM event_catalog_properties"
            " WHERE project_id = %s AND event_name = 'purchase_completed'",
            (p,),
        ).fetchall()
        assert sorted(types) == [
            ("amount", "number"),
            ("currency", "string"),
            ("gift", "boolean"),
            ("i", "number"),
            ("items", "array"),
        ]
        participants = db.execute(
            "SELECT participant_id, event_count, first_seen_at, last_seen_at FROM participants"
            " WHERE project_id = %s ORDER BY participant_id",
            (p,),
        ).fetchall()
        assert [(r[0], r[1]) for r in participants] == [
            (f"user-{k}", len(range(k, n, 7))) for k in range(7)
        ]
        first = participants[0]  # user-0: events 0, 7, ..., 238 (the timestamps' seconds)
        assert first[2].isoformat() == "2026-01-01T00:00:00+00:00"
        assert first[3].isoformat() == "2026-01-01T00:03:58+00:00"
    # Mechanics ran in the same transactions: 10 points per purchase, once each.
    purchases = n // len(NAMES)
    assert points(postgres_server.url, tenant.project_id) == (purchases, 10 * purchases)

    metrics = processor.metrics()
    assert metrics['bricqs_processor_events_total{outcome="stored"}'] == n
    assert metrics["bricqs_processor_end_to_end_lag_seconds_count"] == n
    assert metrics["bricqs_processor_batches_total"] >= 1
    ready = httpx.get(f"{processor.url}/health/ready", timeout=5)
    assert ready.json() == {"status": "ok", "checks": {"redis": "ok", "postgres": "ok"}}
    pending_gauge = 'bricqs_processor_pending_entries{stream="bricqs:events:{0}"}'
    wait_until(lambda: processor.metrics().get(pending_gauge) == 0, 10, "pending gauge at 0")
    assert processor.terminate() == 0
