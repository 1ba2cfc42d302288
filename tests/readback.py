"""Reading back what PostgreSQL holds for a tenant: event counts, and every mechanics
outcome. Shared by tests/processor, tests/mechanics and tests/faults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from bricqs.storage.tenants import Tenant


@dataclass(frozen=True)
class Stored:
    """What PostgreSQL holds for one project (facts: those derived from events)."""

    events: int
    distinct_events: int
    facts: int
    participant_events: int
    catalog_events: int


def stored(database_url: str, project_id: str) -> Stored:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            """
            SELECT
              (SELECT count(*) FROM events WHERE project_id = %(p)s),
              (SELECT count(DISTINCT event_id) FROM events WHERE project_id = %(p)s),
              (SELECT count(*) FROM facts
                WHERE project_id = %(p)s AND fact_type LIKE 'custom.%%'),
              (SELECT coalesce(sum(event_count), 0) FROM participants WHERE project_id = %(p)s),
              (SELECT coalesce(sum(event_count), 0) FROM event_catalog WHERE project_id = %(p)s)
            """,
            {"p": project_id},
        ).fetchone()
    assert row is not None
    return Stored(*(int(v) for v in row))


def snapshot(url: str, tenant: Tenant) -> dict[str, Any]:
    """Every mechanics outcome of a tenant, without ids and wall-clock times."""
    queries = {
        "balances": "SELECT participant_id, balance, total_earned, total_spent"
        " FROM points_balances",
        "ledger": "SELECT participant_id, source, count(*), sum(amount) FROM points_ledger"
        " GROUP BY 1, 2",
        "badges": "SELECT badge_code, participant_id, award_key FROM badge_awards",
        "challenges": "SELECT challenge_code, participant_id FROM challenge_completions",
        "streaks": "SELECT streak_code, participant_id, last_index, last_run_length, longest,"
        " periods::text FROM streak_state",
        "progress": "SELECT criterion_id, participant_id, bucket, count,"
        " round(sum::numeric, 6), max FROM criterion_progress",
        "distinct": "SELECT criterion_id, participant_id, bucket, value, first_at"
        " FROM criterion_distinct",
        "facts": "SELECT fact_type, count(*) FROM facts GROUP BY 1",
    }
    result = {}
    with psycopg.connect(url) as conn:
        for name, sql in queries.items():
            where = " WHERE project_id = %s AND environment = %s"
            if " GROUP BY" in sql:
                sql = sql.replace(" GROUP BY", where + " GROUP BY")
            else:
                sql += where
            rows = conn.execute(sql, (tenant.project_id, tenant.environment)).fetchall()  # type: ignore[call-overload]
            result[name] = sorted(map(tuple, rows), key=repr)
    return result
