"""A streak's active periods are runs on its state row (migration 0022), not a row each,
and its deadline is on that row too (migration 0023)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg

from bricqs.storage.migrate import migrate
from tests.conftest import Story, migrated_before

_PERIOD = "INSERT INTO streak_periods VALUES ('prj_m', 'live', 'daily', %s, %s)"
DAILY = {"code": "daily", "name": "Daily", "trigger": {"fact_type": "custom.run"}}


def _stored(db: psycopg.Connection[Any], story: Story, pid: str) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT periods::text, last_index, last_run_length, longest, xmin::text FROM streak_state"
        " WHERE project_id = %s AND participant_id = %s",
        (story.tenant.project_id, pid),
    ).fetchone()


def test_active_periods_are_kept_as_runs_and_a_period_seen_again_changes_nothing(
    story: Story, db: psycopg.Connection[Any]
) -> None:
    story.define("streaks", DAILY)
    # June 1-3, then June 5, sent out of order: two runs, whatever the order.
    for day in (3, 1, 5, 2):
        story.send("run", "ann", timestamp=f"2026-06-0{day}T12:00:00Z")
    first = date(2026, 6, 1).toordinal()  # a daily streak's period index
    periods, last, length, longest, version = _stored(db, story, "ann") or ()
    assert periods == f"{{[{first},{first + 3}),[{first + 4},{first + 5})}}"
    assert (last, length, longest) == (first + 4, 1, 3)
    assert story.get("/participants/ann/streaks")["items"][0]["longest"] == 3

    # Another run on a day already kept: no new period, no streak.extended, no new row version.
    story.send("run", "ann", timestamp="2026-06-02T18:00:00Z")
    assert (_stored(db, story, "ann") or ())[4] == version
    extended = db.execute(
        "SELECT count(*) FROM facts WHERE project_id = %s AND fact_type = 'streak.extended'",
        (story.tenant.project_id,),
    ).fetchone()
    assert extended == (4,)

    # The gap filled: one run of five.
    story.send("run", "ann", timestamp="2026-06-04T08:00:00Z")
    assert (_stored(db, story, "ann") or ())[:4] == (
        f"{{[{first},{first + 5})}}",
        first + 4,
        5,
        5,
    )
    assert db.execute("SELECT to_regclass('streak_periods')").fetchone() == (None,)


def test_the_migrations_move_every_stored_period_and_deadline_onto_its_state(
    tmp_path: Path,
) -> None:
    ends = datetime(2026, 6, 11, tzinfo=UTC)
    with migrated_before(tmp_path, "0022") as server:
        with psycopg.connect(server.url, autocommit=True) as db:
            db.execute("INSERT INTO projects (project_id, name) VALUES ('prj_m', 'm')")
            for pid, periods in {"ann": [5, 6, 7, 9], "bob": [100]}.items():
                for index in periods:
                    db.execute(_PERIOD, (pid, index))
                db.execute(
                    "INSERT INTO streak_state VALUES"
                    " ('prj_m', 'live', 'daily', %s, %s, 1, 3, 'Europe/Paris')",
                    (pid, periods[-1]),
                )
            # Periods without a state (never written so, but kept were there any).
            db.execute(_PERIOD, ("cid", 42))
            # ann's run is watched; bob's is broken (no deadline).
            db.execute(
                "INSERT INTO streak_deadlines VALUES"
                " ('prj_m', 'live', 'daily', 'ann', 10, 'Europe/Paris', NULL, %s)",
                (ends,),
            )

        assert migrate(server.url)[:2] == ["0022_streak_runs", "0023_streak_deadlines_on_state"]

        with psycopg.connect(server.url) as db:
            rows = db.execute(
                "SELECT participant_id, periods::text, last_index, longest, timezone,"
                " deadline_period, at_risk_at, ends_at, due_at"
                " FROM streak_state ORDER BY participant_id"
            ).fetchall()
            gone = db.execute(
                "SELECT to_regclass('streak_periods'), to_regclass('streak_deadlines')"
            ).fetchone()
        assert rows == [
            ("ann", "{[5,8),[9,10)}", 9, 3, "Europe/Paris", 10, None, ends, ends),
            ("bob", "{[100,101)}", 100, 3, "Europe/Paris", None, None, None, None),
            ("cid", "{[42,43)}", 42, 1, "UTC", None, None, None, None),
        ]
        assert gone == (None, None)
