"""Throwaway local Redis and PostgreSQL servers, for `make run`, the tests and the bench.

Both run in the foreground of this machine as child processes, bound to 127.0.0.1, with
their data in a folder the caller names. PostgreSQL refuses to run as root, so when we
are root it runs as an unprivileged user (`postgres` if it exists, else `nobody`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


class DevStackError(RuntimeError):
    """A local server could not be found or started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(
    port: int, process: subprocess.Popen[bytes], timeout: float, name: str, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevStackError(
                f"{name} exited with code {process.returncode} while starting:\n{_tail(log)}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise DevStackError(f"{name} did not listen on port {port} within {timeout} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 10) -> str:
    """The end of a server's log: why it did not start (a port taken, say)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def redis_binary() -> str:
    """Path of redis-server."""
    path = shutil.which("redis-server")
    if path is None:
        raise DevStackError(
            "redis-server not found; install it (Debian: apt-get install redis-server)"
        )
    return path


def postgres_bindir() -> Path:
    """The bin folder of the newest PostgreSQL installed (15 or newer)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4])
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    raise DevStackError("PostgreSQL not found; install it (Debian: apt-get install postgresql)")


def _unprivileged_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise DevStackError("running as root and no unprivileged user to run PostgreSQL as")


@dataclass
class Server:
    """A started server: its URL and the process behind it."""

    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    data_dir: Path
    extra: dict[str, str] = field(default_factory=dict)

    def stop(self, sig: int | None = None, timeout: float = 15.0) -> None:
        """Stop the server and wait for it.

        PostgreSQL gets SIGINT (fast shutdown: clients are disconnected); SIGTERM would
        wait for every pooled connection to close on its own.
        """
        if sig is None:
            sig = signal.SIGINT if self.name == "postgres" else signal.SIGTERM
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP), to act out a slow dependency."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause`."""
        self.process.send_signal(signal.SIGCONT)


def start_redis(
    data_dir: Path,
    port: int | None = None,
    *,
    appendfsync: str = "everysec",
    extra_args: Sequence[str] = (),
) -> Server:
    """Start redis-server with AOF persistence in `data_dir` (`extra_args` appended)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir.resolve()
    port = port or free_port()
    args = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        appendfsync,
        "--save",
        "",
        "--daemonize",
        "no",
        "--logfile",
        str(data_dir / "redis.log"),
        *extra_args,
    ]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    server = Server("redis", f"redis://127.0.0.1:{port}/0", port, process, data_dir)
    try:
        _wait_for_port(port, process, 15, "redis-server", data_dir / "redis.log")
    except DevStackError:
        server.stop(signal.SIGKILL)
        raise
    return server


def restart(server: Server, timeout: float = 30.0) -> Server:
    """Stop a server started here and start it again on the same port and data."""
    server.stop()
    if server.name == "redis":
        return start_redis(server.data_dir, server.port)
    return start_postgres(
        server.data_dir,
        server.port,
        fsync=server.extra.get("fsync") == "on",
        crash_safe=server.extra.get("crash_safe") == "on",
    )


def start_postgres(
    data_dir: Path, port: int | None = None, *, fsync: bool = True, crash_safe: bool = False
) -> Server:
    """Start PostgreSQL in `data_dir` (initialised on first use) with database `bricqs`.

    `fsync=False` trades durability for speed (tests): commits are acknowledged before
    their WAL is written, so a crashed PostgreSQL process loses the last ones. With
    `crash_safe` they keep `synchronous_commit = on`: each commit's WAL reaches the
    operating system before it is acknowledged, so a crash of any PostgreSQL process (not
    of the machine) loses nothing, as with production settings.

    The superuser is `bricqs`, trusted on loopback only: for local development and tests,
    never for production.
    """
    bindir = postgres_bindir()
    user = _unprivileged_user()
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir.resolve()
    pgdata = data_dir / "pgdata"
    uid, gid = user if user else (None, None)
    extra_groups: list[int] | None = [] if user else None
    if user:
        os.chown(data_dir, *user)
        # Every folder above must be traversable by that user.
        for parent in data_dir.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
    if not (pgdata / "PG_VERSION").exists():
        init = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "bricqs",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=False,
            user=uid,
            group=gid,
            extra_groups=extra_groups,
            capture_output=True,
            text=True,
            cwd=data_dir,
        )
        if init.returncode != 0:
            raise DevStackError(f"initdb failed: {init.stderr.strip()}")
    args = [
        str(bindir / "postgres"),
        "-D",
        str(pgdata),
        "-p",
        str(port),
        "-k",
        str(data_dir),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"fsync={'on' if fsync else 'off'}",
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=256MB",
    ]
    if not fsync:
        args += ["-c", "full_page_writes=off"]
        if not crash_safe:
            args += ["-c", "synchronous_commit=off"]
    with open(data_dir / "postgres.log", "ab") as log:  # the child keeps its own copy
        process = subprocess.Popen(
            args,
            user=uid,
            group=gid,
            extra_groups=extra_groups,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = Server(
        "postgres",
        f"postgresql://bricqs@127.0.0.1:{port}/bricqs",
        port,
        process,
        data_dir,
        {"fsync": "on" if fsync else "off", "crash_safe": "on" if crash_safe else "off"},
    )
    try:
        _wait_for_port(port, process, 60, "postgres", data_dir / "postgres.log")
        _create_database(bindir, port, process)
    except (DevStackError, subprocess.CalledProcessError):
        server.stop(signal.SIGKILL)
        raise
    return server


def _create_database(bindir: Path, port: int, process: subprocess.Popen[bytes]) -> None:
    psql = [
        str(bindir / "psql"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "bricqs",
        "-d",
        "postgres",
        "-tAq",
        "-v",
        "ON_ERROR_STOP=1",
    ]
    deadline = time.monotonic() + 30
    while True:  # the port opens before the server accepts logins
        check = subprocess.run(
            [*psql, "-c", "SELECT 1 FROM pg_database WHERE datname = 'bricqs'"],
            capture_output=True,
            text=True,
        )
        if check.returncode == 0:
            break
        if time.monotonic() > deadline or process.poll() is not None:
            raise DevStackError(f"postgres did not accept connections: {check.stderr.strip()}")
        time.sleep(0.1)
    if check.stdout.strip() != "1":
        subprocess.run([*psql, "-c", "CREATE DATABASE bricqs"], check=True, capture_output=True)
