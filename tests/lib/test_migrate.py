"""The migration runner: checksums of applied files, a bounded wait for locks, and steps
run outside a transaction; against a real PostgreSQL, with migration folders of the
test's own (the shipped ones are covered by tests/lib/test_storage.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bricqs.admin import cmd_migrate
from bricqs.storage.migrate import (
    MigrationError,
    available_migrations,
    collation_warning,
    migrate,
)
from bricqs_devstack.servers import Server

FAST = {"lock_timeout_ms": 50, "retry_pause_s": 0.05}


@pytest.fixture
def database(postgres_server: Server, db: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty database; its URL."""
    name = "migrate_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    db.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.url.rsplit("/", 1)[0] + "/" + name
    db.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def folder(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "migrations"
    root.mkdir(exist_ok=True)
    for name, sql in files.items():
        (root / name).write_text(sql)
    return root


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def migrate_past_a_lock(
    database: str, files: Path, hold: str, version: str, caplog: pytest.LogCaptureFixture
) -> list[Any]:
    """Migrate while another transaction that ran `hold` is open; end that transaction only
    once the runner has given up waiting for `version` once and said it will retry."""
    outcome: list[Any] = []
    caplog.set_level(logging.WARNING, logger="bricqs.storage.migrate")
    with psycopg.connect(database) as holder:
        holder.execute(hold)
        runner = threading.Thread(
            target=lambda: outcome.append(migrate(database, files, attempts=1000, **FAST))
        )
        runner.start()
        wait_until(lambda: any(version in r.getMessage() for r in caplog.records), "a retry")
    runner.join(30)
    return outcome


def test_an_edited_applied_file_is_refused_by_name(database: str, tmp_path: Path) -> None:
    files = folder(tmp_path, {"0001_t.sql": "CREATE TABLE t (id int);\n"})
    assert migrate(database, files) == ["0001_t"]
    (files / "0001_t.sql").write_text("CREATE TABLE t (id bigint);\n")
    (files / "0002_u.sql").write_text("CREATE TABLE u (id int);\n")
    with pytest.raises(MigrationError, match=r"0001_t\.sql .*changed since it was applied"):
        migrate(database, files)
    with psycopg.connect(database) as conn:  # and nothing after it ran
        assert conn.execute("SELECT to_regclass('u')").fetchone() == (None,)


def test_a_database_migrated_before_checksums_gets_them_recorded(
    database: str, tmp_path: Path
) -> None:
    files = folder(tmp_path, {"0001_t.sql": "CREATE TABLE t (id int);\n"})
    with psycopg.connect(database, autocommit=True) as conn:  # as the runner before checksums
        conn.execute(
            "CREATE TABLE schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO schema_migrations (version) VALUES ('0001_t')")
    assert migrate(database, files) == []
    with psycopg.connect(database) as conn:
        (checksum,) = conn.execute("SELECT checksum FROM schema_migrations").fetchone() or ("",)
    assert checksum == available_migrations(files)[0].checksum
    (files / "0001_t.sql").write_text("CREATE TABLE t (id bigint);\n")
    with pytest.raises(MigrationError, match=r"0001_t\.sql"):
        migrate(database, files)


def test_a_migration_that_cannot_take_its_lock_fails_clearly_after_its_attempts(
    database: str, tmp_path: Path
) -> None:
    files = folder(tmp_path, {"0001_t.sql": "CREATE TABLE t (id int);\n"})
    migrate(database, files)
    (files / "0002_add.sql").write_text("ALTER TABLE t ADD COLUMN n int;\n")
    with psycopg.connect(database) as holder:
        holder.execute("SELECT * FROM t")  # an open transaction's ACCESS SHARE lock
        with pytest.raises(MigrationError, match=r"0002_add\.sql.*lock.*3 attempts"):
            migrate(database, files, attempts=3, **FAST)
    with psycopg.connect(database) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == ["0001_t"]


def test_a_migration_waiting_for_a_lock_retries_and_applies_once_it_is_released(
    database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = folder(tmp_path, {"0001_t.sql": "CREATE TABLE t (id int);\n"})
    migrate(database, files)
    (files / "0002_add.sql").write_text("ALTER TABLE t ADD COLUMN n int;\n")
    outcome = migrate_past_a_lock(database, files, "SELECT * FROM t", "0002_add", caplog)
    assert outcome == [["0002_add"]]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT n FROM t").fetchall() == []


def test_a_no_transaction_file_builds_an_index_concurrently(database: str, tmp_path: Path) -> None:
    files = folder(
        tmp_path,
        {
            "0001_t.sql": "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1), (2);\n",
            "0002_index.sql": (
                "-- migrate: no-transaction\n"
                "-- Built without blocking writes.\n"
                "DROP INDEX CONCURRENTLY IF EXISTS t_id;\n"
                "CREATE INDEX CONCURRENTLY t_id\n    ON t (id);\n"
            ),
        },
    )
    assert migrate(database, files) == ["0001_t", "0002_index"]
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_id'::regclass"
        ).fetchone()
    assert row == (True,)


def test_a_no_transaction_file_runs_again_from_the_top_after_a_lock_timeout(
    database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A timed-out CREATE INDEX CONCURRENTLY leaves an invalid index behind; the retry drops
    it first, so the index that stays is valid."""
    files = folder(tmp_path, {"0001_t.sql": "CREATE TABLE t (id int);\n"})
    migrate(database, files)
    (files / "0002_index.sql").write_text(
        "-- migrate: no-transaction\n"
        "DROP INDEX CONCURRENTLY IF EXISTS t_id;\n"
        "CREATE INDEX CONCURRENTLY t_id ON t (id);\n"
    )
    # A write in flight: the build waits for it.
    hold = "INSERT INTO t VALUES (1)"
    outcome = migrate_past_a_lock(database, files, hold, "0002_index", caplog)
    assert outcome == [["0002_index"]]
    with psycopg.connect(database) as conn:
        indexes = conn.execute(
            "SELECT indexrelid::regclass::text, indisvalid FROM pg_index"
            " WHERE indrelid = 't'::regclass"
        ).fetchall()
    assert indexes == [("t_id", True)]


def test_a_database_whose_text_keys_compare_by_a_locale_is_warned_about(
    postgres_server: Server, db: Any, database: str
) -> None:
    assert collation_warning(postgres_server.url) is None  # the test server's: C
    db.execute('DROP DATABASE IF EXISTS "migrate_icu" WITH (FORCE)')
    db.execute(
        "CREATE DATABASE migrate_icu TEMPLATE template0"
        " LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
    )
    icu = database.rsplit("/", 1)[0] + "/migrate_icu"
    try:
        # What an operator sees: `bricqs-admin migrate` migrates it and says why to move.
        result = asyncio.run(
            cmd_migrate(argparse.Namespace(database_url=icu, lock_timeout_ms=5000, attempts=1))
        )
    finally:
        db.execute('DROP DATABASE "migrate_icu" WITH (FORCE)')
    assert result["applied"] == [m.version for m in available_migrations()]
    [warning] = result["warnings"]
    assert "ICU 'en-US'" in warning and "LOCALE 'C'" in warning
    assert warning in result["message"]
    assert collation_warning(database) is None  # made from the server's template: C
