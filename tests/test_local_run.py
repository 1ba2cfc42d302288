"""`make run` (the `bricqs-dev` command) runs the whole system: its own Redis and
PostgreSQL, ingest, processor and api; the README's first curl example becomes a fact
with points; `bricqs-admin` finds its database; Ctrl-C stops everything and leaves nothing
listening."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bricqs_devstack.servers import free_port

pytestmark = pytest.mark.slow


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.TransportError, OSError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The shell commands of the README's "Try it" block (continued lines kept together)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Try it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if not line.endswith("\\") and current.count("'") % 2 == 0:
            commands.append(current)
            current = ""
    return commands


def test_make_run_serves_the_whole_system_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {
        name: free_port()
        for name in (
            "DEV_REDIS_PORT",
            "DEV_POSTGRES_PORT",
            "INGEST_PORT",
            "API_PORT",
            "SYNC_PORT",
            "METRICS_PORT",
            "IMPORT_METRICS_PORT",
            "DISPATCHER_METRICS_PORT",
        )
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        {k: str(v) for k, v in ports.items()},
        BRICQS_DATA_DIR=str(tmp_path / ".data"),
        LOG_LEVEL="WARNING",
    )
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "bricqs-dev")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        keys_file = tmp_path / ".data" / "demo-keys.json"
        keys = wait_for(lambda: json.loads(keys_file.read_text()), 90, "the demo keys file")
        ingest = f"http://127.0.0.1:{ports['INGEST_PORT']}"
        api = f"http://127.0.0.1:{ports['API_PORT']}"
        probes = [
            f"http://127.0.0.1:{ports[p]}"
            for p in ("METRICS_PORT", "IMPORT_METRICS_PORT", "DISPATCHER_METRICS_PORT")
        ]
        for base in (ingest, api, *probes):
            wait_for(lambda b=base: httpx.get(f"{b}/health/ready").status_code == 200, 60, base)

        # The README's first example, as a user would paste it.
        command = (
            f'curl -sS -X POST {ingest}/api/v1/ingest/events -H "X-API-Key: {keys["live_key"]}"'
            ' -H "Content-Type: application/json" -d \'{"event_name": "purchase_completed",'
            ' "participant_id": "user_123", "properties": {"amount": 49.99, "currency": "USD",'
            ' "product_id": "prod_abc"}, "timestamp": "2026-04-10T10:30:00Z"}\''
        )
        answer = json.loads(
            subprocess.run(
                ["bash", "-c", command], capture_output=True, check=True, timeout=30
            ).stdout
        )
        assert answer["accepted"] is True
        headers = {"X-API-Key": keys["live_key"]}
        state_url = f"{api}/api/v1/gamify/participants/user_123/state"
        # The processor turns it into a fact; the seeded demo rules award 49 points and a badge.
        state = wait_for(
            lambda: (s := httpx.get(state_url, headers=headers).json())["points"]["balance"] and s,
            30,
            "points from the processor",
        )
        assert state["points"]["balance"] == 49
        assert [b["badge"] for b in state["badges"]["earned"]] == ["first-purchase"]

        # An import goes to the processor that reads historical streams, and counts the same.
        imported = httpx.post(
            f"{ingest}/api/v1/ingest/events/batch",
            headers=headers,
            json={
                "historical": True,
                "events": [
                    {
                        "event_name": "purchase_completed",
                        "participant_id": "migrated_user",
                        "properties": {"amount": 49.99, "currency": "USD"},
                        "timestamp": "2025-06-01T10:30:00Z",
                    }
                ],
            },
        )
        assert imported.status_code == 202, imported.text
        migrated = f"{api}/api/v1/gamify/participants/migrated_user/state"
        wait_for(
            lambda: httpx.get(migrated, headers=headers).json()["points"]["balance"] == 49,
            30,
            "points from the import processor",
        )
        stored = 'bricqs_processor_events_total{outcome="stored"} '
        by_processor = [
            httpx.get(f"http://127.0.0.1:{ports[p]}/metrics").text
            for p in ("METRICS_PORT", "IMPORT_METRICS_PORT")
        ]
        # The live processor stored the live event, the import processor the imported one.
        assert [f"{stored}1.0" in text for text in by_processor] == [True, True]

        # Every command of the README's "Try it" block, as written but for the ports.
        commands = readme_commands()
        assert len(commands) == 6 and commands[0].startswith("export KEY=")
        answers = []
        for command in commands[1:]:
            command = command.replace("localhost:8000", f"localhost:{ports['INGEST_PORT']}")
            command = command.replace("localhost:8001", f"localhost:{ports['API_PORT']}")
            done = subprocess.run(
                ["bash", "-c", commands[0] + command.replace("curl ", "curl -sS ", 1)],
                cwd=tmp_path,
                capture_output=True,
                check=True,
                timeout=30,
            )
            answers.append(json.loads(done.stdout))
        single, batch, sync, user_state, board = answers
        assert single["accepted"] is True and batch["accepted"] == 3
        assert sync["fact_type"] == "custom.level_completed"
        assert sync["effects"]["points"][0]["amount"] == 50  # demo rule: ten points per level
        assert user_state["participant_id"] == "user_123"
        assert board["leaderboard"] == "top-players"

        # The admin tool, in a second terminal in the same folder, finds make run's database.
        admin_env = {k: v for k, v in env.items() if k != "BRICQS_DATA_DIR"}
        listed = subprocess.run(
            [str(Path(sys.executable).parent / "bricqs-admin"), "project", "list", "--json"],
            cwd=tmp_path,
            env=admin_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        projects = json.loads(listed.stdout)["projects"]
        assert [p["project_id"] for p in projects] == [keys["project_id"]]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        log.close()
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert not any(listening(port) for port in ports.values())
    assert not (tmp_path / ".data" / "local-stack.json").exists()  # nothing left to find
