"""Ordered SQL migrations, applied once each under an advisory lock.

Files in `migrations/` are named `NNNN_name.sql` and applied in order, each in its own
transaction. The lock makes concurrent `migrate` runs (a Job and a developer, say) safe:
the second waits, then finds nothing left to do.
"""

from __future__ import annotations

from importlib import resources

import psycopg

# An arbitrary constant shared by every migrating process.
_MIGRATION_LOCK = 0x6272_6963_7173  # "bricqs"


def available_migrations() -> list[tuple[str, str]]:
    """(version, sql) of every migration shipped with the package, in order."""
    folder = resources.files("bricqs.storage") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


def migrate(database_url: str) -> list[str]:
    """Apply the migrations this database lacks; return the versions applied."""
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in available_migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied
