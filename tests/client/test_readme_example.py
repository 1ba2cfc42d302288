"""The README's Python client example runs as written against the real services."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import Tenant

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_example_runs(
    ingest_url: str, api_url: str, client_tenant: Tenant, tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python client", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "demo-keys.json").write_text(
        json.dumps({"test_key": client_tenant.test_key})
    )
    code = (
        example.group(1)
        .replace("http://localhost:8000", ingest_url)
        .replace("http://localhost:8001", api_url)
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    points, balance = run.stdout.splitlines()
    assert "'amount': 10" in points
    assert int(balance) in (10, 20)
