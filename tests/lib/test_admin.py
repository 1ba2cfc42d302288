"""`bricqs-admin` as a new user types it: options before or after the command, and the
servers of a running `make run` found without being named. Through the installed
command, against the real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bricqs.local_stack import LocalStack, write_local_stack
from bricqs_devstack.servers import Server

ADMIN = str(Path(sys.executable).parent / "bricqs-admin")


def admin(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "BRICQS_DATA_DIR")
    }
    return subprocess.run(
        [ADMIN, *args], capture_output=True, text=True, timeout=60, check=False, env=env, cwd=cwd
    )


@pytest.mark.parametrize("placement", ["after", "before", "between"])
def test_json_and_the_database_url_go_before_or_after_the_command(
    postgres_server: Server, placement: str, tmp_path: Path
) -> None:
    options = ["--json", "--database-url", postgres_server.url]
    command = ["project", "create", f"acme {placement}"]
    argv = {
        "after": [*command, *options],
        "before": [*options, *command],
        "between": [options[0], *command, *options[1:]],
    }[placement]
    done = admin(*argv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["project"]["name"] == f"acme {placement}"


def test_the_servers_of_a_running_make_run_are_found_in_its_data_folder(
    postgres_server: Server, redis_server: Server, tmp_path: Path, redis_client: Any
) -> None:
    stack = LocalStack(database_url=postgres_server.url, redis_url=redis_server.url)
    (tmp_path / ".data").mkdir()
    written = write_local_stack(stack, tmp_path / ".data")

    created = admin("project", "create", "found it", "--json", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["project"]["name"] == "found it"
    assert written.name in created.stderr  # says where the URL came from
    dead_letters = admin("dlq", "list", "--json", cwd=tmp_path)
    assert dead_letters.returncode == 0, dead_letters.stderr
    assert json.loads(dead_letters.stdout) == {"entries": []}


def test_with_no_server_named_or_running_the_error_gives_the_command_to_type(
    tmp_path: Path,
) -> None:
    done = admin("project", "list", cwd=tmp_path)
    assert done.returncode == 2
    assert "--database-url postgresql://bricqs@127.0.0.1:15432/bricqs" in done.stderr


def test_migrate_takes_the_direct_address_when_database_url_leads_to_a_pooler(
    postgres_server: Server, tmp_path: Path
) -> None:
    # DATABASE_URL here leads nowhere (as a pooler's address would lead to a pooler, where
    # the migration's session lock means nothing); DATABASE_DIRECT_URL is the primary.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BRICQS_DATA_DIR")}
    env |= {"DATABASE_URL": "postgresql://bricqs@127.0.0.1:1/nowhere?connect_timeout=2"}
    env |= {"DATABASE_DIRECT_URL": postgres_server.url}
    run = [ADMIN, "--json"]
    done = subprocess.run(
        [*run, "migrate"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "applied" in json.loads(done.stdout)
    # Other commands keep DATABASE_URL: they run in transactions, fine behind a pooler.
    listed = subprocess.run(
        [*run, "project", "list"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert listed.returncode != 0
