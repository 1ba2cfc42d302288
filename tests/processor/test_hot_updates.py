"""The tables updated on every event leave room on their pages (migration 0025), so an
update of a row whose page is otherwise full of its neighbours is still HOT: a new
version on the same page, no new index entry."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import Server

ROWS = 600  # several pages of each table; the row updated is in one filled by the insert
_FILL = {
    "criterion_progress": "INSERT INTO criterion_progress (project_id, environment,"
    " criterion_id, participant_id, bucket, reached_at)"
    " SELECT %s, 'live', 'crit_hot', 'p' || i, 'all', now() FROM generate_series(1, %s) i",
    "participants": "INSERT INTO participants (project_id, environment, participant_id,"
    " first_seen_at, last_seen_at, event_count)"
    " SELECT %s, 'live', 'p' || i, now(), now(), 1 FROM generate_series(1, %s) i",
    "points_balances": "INSERT INTO points_balances (project_id, environment, participant_id)"
    " SELECT %s, 'live', 'p' || i FROM generate_series(1, %s) i",
}
# What the processor's upserts change: counters and times, never an indexed column.
_UPDATE = {
    "criterion_progress": "UPDATE criterion_progress SET count = count + 1, sum = sum + 5",
    "participants": "UPDATE participants SET event_count = event_count + 1, last_seen_at = now()",
    "points_balances": "UPDATE points_balances SET balance = balance + 5,"
    " total_earned = total_earned + 5",
}


@pytest.mark.parametrize("table", sorted(_FILL))
def test_an_update_in_a_page_filled_by_inserts_is_hot(postgres_server: Server, table: str) -> None:
    with psycopg.connect(postgres_server.url) as db:  # one transaction, rolled back
        project = f"prj_hot_{table}"
        db.execute(_FILL[table], (project, ROWS))
        page = _page(db, table, project)

        db.execute(
            _UPDATE[table] + " WHERE project_id = %s AND participant_id = %s",
            (project, f"p{ROWS // 2}"),
        )

        hot = db.execute(
            "SELECT pg_stat_get_xact_tuples_hot_updated(%s::regclass)", (table,)
        ).fetchone()
        assert hot == (1,)
        assert _page(db, table, project) == page
        db.rollback()


def _page(db: psycopg.Connection[Any], table: str, project: str) -> int:
    """The heap page of the middle row."""
    row = db.execute(
        f"SELECT (ctid::text::point)[0]::int FROM {table}"  # noqa: S608 - a fixed name
        " WHERE project_id = %s AND participant_id = %s",
        (project, f"p{ROWS // 2}"),
    ).fetchone()
    assert row is not None
    return int(row[0])
