"""A program that tracks and exits without closing its client still delivers: the exit
hook sends what is queued (within shutdown_timeout)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.client.conftest import Project

PROGRAMS = {
    "sync": """
        from bricqs_client import Client, Options
        client = Client(KEY, ingest_url=URL, options=Options(flush_interval=3600))
        keys = [client.track("lesson_done", f"p{i}") for i in range(150)]
        print(" ".join(keys))
    """,
    "async": """
        import asyncio
        from bricqs_client import AsyncClient, Options

        async def main():
            client = AsyncClient(KEY, ingest_url=URL, options=Options(flush_interval=3600))
            return [await client.track("lesson_done", f"p{i}") for i in range(150)]

        print(" ".join(asyncio.run(main())))
    """,
}


@pytest.mark.slow
def test_events_queued_when_the_program_exits_are_delivered(flavour: str, project: Project) -> None:
    # The queue never fills a batch and the flush interval never passes: only the exit
    # hook can send these (the last 50 at least).
    program = (
        f"KEY = {project.tenant.live_key!r}\nURL = {project.ingest_url!r}\n"
        + textwrap.dedent(PROGRAMS[flavour])
    )
    run = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    keys = run.stdout.split()
    assert len(keys) == 150
    facts = project.facts_once(150)
    assert facts == dict.fromkeys(keys, 1)
