"""ShutdownSteps: a stop signal always ends a worker, and says where it was stuck."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bricqs.runtime import ShutdownSteps


def test_a_step_that_never_ends_is_abandoned_and_named_with_the_stacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.shutdown")
    done: list[str] = []
    released = asyncio.Event()

    async def stuck_chore() -> None:
        # Swallows its cancellation, like a client library caught mid-read, until the
        # test releases it.
        while not released.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    async def quick() -> None:
        done.append("quick")

    async def shut_down() -> ShutdownSteps:
        steps = ShutdownSteps(log, timeout_s=0.2)
        chore = asyncio.create_task(stuck_chore(), name="stuck-chore")
        await asyncio.sleep(0)
        chore.cancel()
        await steps.run("chores", asyncio.gather(chore, return_exceptions=True))
        await steps.run("pool", quick())
        released.set()
        chore.cancel()
        await asyncio.gather(chore, return_exceptions=True)
        return steps

    with caplog.at_level(logging.ERROR, logger="test.shutdown"):
        steps = asyncio.run(shut_down())
    assert not steps.clean
    assert done == ["quick"]  # the steps after a stuck one still run
    assert "shutdown step 'chores' still running after 0 s" in caplog.text
    assert "task stuck-chore:" in caplog.text and "stuck_chore" in caplog.text


def test_failing_steps_are_logged_and_do_not_make_the_shutdown_unclean(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps = ShutdownSteps(logging.getLogger("test.shutdown"), timeout_s=1)

    async def broken() -> None:
        raise ConnectionResetError("gone")

    with caplog.at_level(logging.WARNING, logger="test.shutdown"):
        asyncio.run(steps.run("redis", broken()))
    assert steps.clean
    assert "shutdown step 'redis' failed: ConnectionResetError: gone" in caplog.text
