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
