"""Ordered SQL migrations, applied once each under an advisory lock.

Files in `migrations/` are named `NNNN_name.sql` and applied in order, each in its own
transaction. The advisory lock makes concurrent `migrate` runs (a Job and a developer,
say) safe: the second waits, then finds nothing left to do.

Migrations need a server session of their own for the whole run: the advisory lock is
session-wide (a transaction-scoped one cannot cover the files that run outside a
transaction), and so is their `lock_timeout`. A transaction pooler (PgBouncer in
transaction mode) would spread those statements over other clients' sessions, so
`DATABASE_URL` of a migration is PostgreSQL's own address, never the pooler's.

- Each applied file's SHA-256 is recorded, and a run refuses to go on when an applied file
  has changed since: a released migration is never edited, a new one is added instead.
  Versions applied before checksums were recorded get theirs on the next run.
- Every statement waits at most `lock_timeout_ms` for a table lock, so a migration queued
  behind a long transaction does not hold every writer of that table behind it; the file
  is then tried again after a pause, up to `attempts` times.
- A file whose first line is `-- migrate: no-transaction` runs statement by statement
  outside a transaction, for `CREATE INDEX CONCURRENTLY` and its kind. Each statement ends
  with `;` at the end of a line. After a failure such a file runs again from its first
  statement, so each statement must be safe to repeat: drop what a failed run can leave
  behind (`DROP INDEX CONCURRENTLY IF EXISTS`, an invalid index) before creating it.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors

log = logging.getLogger(__name__)

# An arbitrary constant shared by every migrating process.
_MIGRATION_LOCK = 0x6272_6963_7173  # "bricqs"
NO_TRANSACTION = "-- migrate: no-transaction"
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)

DEFAULT_LOCK_TIMEOUT_MS = 5000
DEFAULT_ATTEMPTS = 10


class MigrationError(Exception):
    """Migrations cannot go on; the message names the file and what to do."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: str
    sql: str
    checksum: str  # SHA-256 of the file's bytes, hex

    @property
    def filename(self) -> str:
        """The file's name, as people see it."""
        return f"{self.version}.sql"

    @property
    def transactional(self) -> bool:
        """False for a file marked to run outside a transaction."""
        return not self.sql.startswith(NO_TRANSACTION)

    def statements(self) -> list[str]:
        """The statements of a no-transaction file, each run on its own."""
        parts = (part.strip() for part in _STATEMENT_END.split(self.sql))
        return [part for part in parts if _has_code(part)]


def _has_code(sql: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("--") for line in sql.splitlines())


def available_migrations(folder: Path | Traversable | None = None) -> list[Migration]:
    """Every migration in `folder` (default: those shipped with the package), in order."""
    if folder is None:
        folder = resources.files("bricqs.storage") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    migrations = []
    for file in files:
        raw = file.read_bytes()
        version = file.name.removesuffix(".sql")
        migrations.append(Migration(version, raw.decode(), hashlib.sha256(raw).hexdigest()))
    return migrations


def migrate(
    database_url: str,
    folder: Path | Traversable | None = None,
    *,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_pause_s: float = 1.0,
) -> list[str]:
    """Apply the migrations this database lacks; return the versions applied."""
    migrations = available_migrations(folder)
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            done = _applied_checksums(conn, migrations)
            for migration in migrations:
                if migration.version in done:
                    continue
                _apply_with_retries(conn, migration, lock_timeout_ms, attempts, retry_pause_s)
                applied.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


# Collations that compare text byte by byte: what every id, code and key of the schema
# is written for (they are ASCII, generated or validated).
_BYTE_ORDER = frozenset({"C", "POSIX", "C.UTF-8", "C.utf8"})


def collation_warning(database_url: str) -> str | None:
    """Why the database's default collation would slow the schema's text keys down, or
    None when it compares bytes.

    Every index of the hot path is keyed by text (project, environment, participant, ids),
    and a key comparison under a linguistic collation (en_US.UTF-8, an ICU locale: what a
    managed PostgreSQL often defaults to) runs the locale's rules instead of `memcmp`.
    Inserting fact and ledger rows took 17% longer per row under ICU `en-US` than under C
    on the same server (deploy/README.md, PostgreSQL). The tables inherit the database's
    collation, so only the database's creation can choose it: the migrations do not
    rewrite every key column of an existing database.
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        # As JSON: the locale's column is daticulocale in PostgreSQL 15-16, datlocale after.
        row = conn.execute(
            "SELECT to_jsonb(d) FROM pg_database d WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    database: dict[str, Any] = row[0]
    provider = database["datlocprovider"]  # c: libc, i: ICU, b: builtin (17+)
    if provider == "c":
        collation = database["datcollate"]
    else:
        collation = database.get("datlocale") or database.get("daticulocale")
    if provider != "i" and collation in _BYTE_ORDER:
        return None
    kind = {"c": "libc", "i": "ICU", "b": "builtin"}.get(provider, provider)
    return (
        f"the database's default collation is {kind} {collation!r}: its text keys compare"
        " by the locale's rules, not byte by byte, which made inserts about 17% slower in"
        " a measurement; create the database with LOCALE 'C' (deploy/README.md, PostgreSQL)"
    )


def _applied_checksums(conn: psycopg.Connection[Any], migrations: list[Migration]) -> set[str]:
    """Versions already applied; records missing checksums, refuses edited files."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
    recorded = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
    for migration in migrations:
        if migration.version not in recorded:
            continue
        checksum = recorded[migration.version]
        if checksum is None:  # applied by a runner that kept no checksums: trust it once
            conn.execute(
                "UPDATE schema_migrations SET checksum = %s WHERE version = %s",
                (migration.checksum, migration.version),
            )
        elif checksum != migration.checksum:
            raise MigrationError(
                f"{migration.filename} has changed since it was applied (checksum"
                f" {checksum[:12]}… recorded, {migration.checksum[:12]}… now); restore the"
                " released file and put the change in a new migration"
            )
    return set(recorded)


def _apply_with_retries(
    conn: psycopg.Connection[Any],
    migration: Migration,
    lock_timeout_ms: int,
    attempts: int,
    retry_pause_s: float,
) -> None:
    for attempt in range(1, attempts + 1):
        try:
            _apply(conn, migration, lock_timeout_ms)
            return
        except errors.LockNotAvailable as exc:
            if attempt == attempts:
                raise MigrationError(
                    f"{migration.filename} could not take a lock within {lock_timeout_ms} ms"
                    f" in {attempts} attempts ({exc.diag.message_primary}); a long"
                    " transaction holds a table it changes: end it, or run the migration"
                    " again in a quieter moment"
                ) from exc
            # Jittered, so migrators and the transactions they wait for do not keep meeting.
            pause = retry_pause_s * (0.5 + random.random())  # noqa: S311
            log.warning(
                "%s: no lock within %d ms (attempt %d of %d); trying again in %.1f s",
                migration.filename,
                lock_timeout_ms,
                attempt,
                attempts,
                pause,
            )
            time.sleep(pause)


def _apply(conn: psycopg.Connection[Any], migration: Migration, lock_timeout_ms: int) -> None:
    record = "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)"
    if migration.transactional:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{lock_timeout_ms}ms",))
            conn.execute(migration.sql.encode())
            conn.execute(record, (migration.version, migration.checksum))
        return
    # Session-wide here (each statement is its own transaction), and reset after, so the
    # advisory lock is never taken with a timeout.
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{lock_timeout_ms}ms",))
    try:
        for statement in migration.statements():
            conn.execute(statement.encode())
    finally:
        conn.execute("RESET lock_timeout")
    conn.execute(record, (migration.version, migration.checksum))
