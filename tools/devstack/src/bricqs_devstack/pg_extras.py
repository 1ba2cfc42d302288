"""What production puts around PostgreSQL, started locally like `servers`: PgBouncer in
front of a server, and a streaming standby of it. For the scale tests and the bench.

Both bind to 127.0.0.1 and keep their files in a folder the caller names; when we are
root they run as the same unprivileged user as PostgreSQL.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from bricqs_devstack.servers import (
    DevStackError,
    Server,
    _unprivileged_user,
    _wait_for_port,
    free_port,
    postgres_bindir,
    start_postgres,
)


def pgbouncer_binary() -> str:
    """Path of pgbouncer (Debian installs it in /usr/sbin)."""
    path = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if path is None:
        raise DevStackError("pgbouncer not found; install it (Debian: apt-get install pgbouncer)")
    return path


def start_pgbouncer(
    data_dir: Path,
    upstream: Server,
    port: int | None = None,
    *,
    pool_mode: str = "transaction",
    pool_size: int = 20,
) -> Server:
    """Start PgBouncer in front of `upstream` (a PostgreSQL from `start_postgres`): every
    database of it, user `bricqs` trusted, `pool_size` server connections per database.

    Its URL names database `bricqs`, like the server's. PgBouncer 1.18 refuses startup
    parameters it does not know (`options`, say), as in production.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir.resolve()
    port = port or free_port()
    (data_dir / "userlist.txt").write_text('"bricqs" ""\n')
    log = data_dir / "pgbouncer.log"
    (data_dir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host=127.0.0.1 port={upstream.port}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {data_dir / 'userlist.txt'}\n"
        f"pool_mode = {pool_mode}\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 1000\n"
        f"logfile = {log}\n"
        "log_connections = 0\n"
        "log_disconnections = 0\n"
    )
    user = _unprivileged_user()  # PgBouncer refuses to run as root
    if user:
        for path in (data_dir, data_dir / "userlist.txt", data_dir / "pgbouncer.ini"):
            shutil.chown(path, *user)
    uid, gid = user if user else (None, None)
    process = subprocess.Popen(
        [pgbouncer_binary(), str(data_dir / "pgbouncer.ini")],
        user=uid,
        group=gid,
        extra_groups=[] if user else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server(
        "pgbouncer",
        f"postgresql://bricqs@127.0.0.1:{port}/bricqs",
        port,
        process,
        data_dir,
        {"pool_mode": pool_mode, "upstream": upstream.url},
    )
    try:
        _wait_for_port(port, process, 15, "pgbouncer", log)
    except DevStackError:
        server.stop(signal.SIGKILL)
        raise
    return server


def start_standby(data_dir: Path, primary: Server, port: int | None = None) -> Server:
    """Start a streaming standby of `primary`: a base backup (`pg_basebackup -R`, which
    writes the connection to the primary and `standby.signal`), then PostgreSQL on it.

    The primary needs nothing set: PostgreSQL 15's defaults (`wal_level = replica`,
    `max_wal_senders = 10`) and initdb's loopback replication rule allow it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir.resolve()
    pgdata = data_dir / "pgdata"
    user = _unprivileged_user()
    if user:
        shutil.chown(data_dir, *user)
    uid, gid = user if user else (None, None)
    if not (pgdata / "PG_VERSION").exists():
        backup = subprocess.run(
            [
                str(postgres_bindir() / "pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "bricqs"),
                *("-D", str(pgdata), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"),
            ],
            check=False,
            user=uid,
            group=gid,
            extra_groups=[] if user else None,
            capture_output=True,
            text=True,
            cwd=data_dir,
        )
        if backup.returncode != 0:
            raise DevStackError(f"pg_basebackup failed: {backup.stderr.strip()}")
    # The primary's fsync setting is on its command line, not in the copied files.
    return start_postgres(data_dir, port, fsync=primary.extra.get("fsync") == "on")


def wait_for_replay(primary_url: str, standby_url: str, timeout: float = 30.0) -> float:
    """Wait until the standby has replayed all the WAL the primary had inserted when
    called (its insert position: with `synchronous_commit = off` a commit may not be
    written out yet); return the seconds it took. Raises DevStackError past `timeout`."""
    started = time.monotonic()
    with psycopg.connect(primary_url, autocommit=True) as conn:
        target = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
    assert target is not None
    with psycopg.connect(standby_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())", (target[0],)
            ).fetchone()
            assert row is not None
            if row[0] <= 0:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise DevStackError(f"the standby is {row[0]} bytes behind after {timeout} s")
            time.sleep(0.05)
