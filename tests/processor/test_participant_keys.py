"""Facts and ledger entries are keyed by participant first (migration 0024): one index
each, not a primary key by id plus an index by participant, and webhook messages name
their fact's participant so the dispatcher still reads a fact by its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from bricqs.storage.migrate import migrate
from tests.conftest import migrated_before

_FACT = (
    "INSERT INTO facts (project_id, environment, fact_id, fact_type, participant_id,"
    " event_id, properties, occurred_at, retention_at)"
    " VALUES ('prj_m', 'live', %s, 'badge.awarded', %s, %s, '{}', now(),"
    " greatest(now(), (SELECT floor FROM retention_floors WHERE parent = 'facts')))"
)
_MESSAGE = (
    "INSERT INTO webhook_messages (endpoint_id, fact_id, project_id, environment, fact_type)"
    " VALUES ('whe_m', %s, 'prj_m', 'live', 'badge.awarded')"
)
_ENTRY = (
    "INSERT INTO points_ledger (project_id, environment, entry_id, participant_id, amount,"
    " kind, source, fact_id, occurred_at) VALUES ('prj_m', 'live', %s, %s, 5, 'earn', 'r', %s,"
    " now())"
)


def _indexes(db: psycopg.Connection[Any], table: str) -> dict[str, str]:
    """The table's indexes: name -> its key columns, as pg_get_indexdef shows them."""
    rows = db.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass",
        (table,),
    ).fetchall()
    return {name: definition.split(" USING btree ")[1] for name, definition in rows}


def test_the_migration_keys_facts_and_entries_by_participant_and_fills_the_messages(
    tmp_path: Path,
) -> None:
    with migrated_before(tmp_path, "0024") as server:
        with psycopg.connect(server.url, autocommit=True) as db:
            db.execute("INSERT INTO projects (project_id, name) VALUES ('prj_m', 'm')")
            db.execute(_FACT, ("fact_a", "ann", "evt_a"))
            db.execute(_FACT, ("fact_b", "bob", "evt_b"))
            db.execute(_MESSAGE, ("fact_a",))
            db.execute(_MESSAGE, ("fact_b",))
            db.execute(_MESSAGE, ("fact_gone",))  # cannot exist, but dropped were there any
            db.execute(_ENTRY, ("pts_a", "ann", "fact_a"))

        assert migrate(server.url)[0] == "0024_participant_keys"  # later ones follow

        with psycopg.connect(server.url) as db:
            messages = db.execute(
                "SELECT fact_id, participant_id FROM webhook_messages ORDER BY fact_id"
            ).fetchall()
            facts = _indexes(db, "facts")
            ledger = _indexes(db, "points_ledger")
        assert messages == [("fact_a", "ann"), ("fact_b", "bob")]
        assert facts == {
            "facts_pkey": "(project_id, environment, participant_id, fact_id, retention_at)"
        }
        assert ledger["points_ledger_pkey"] == "(project_id, environment, participant_id, entry_id)"
        assert "points_ledger_participant" not in ledger
