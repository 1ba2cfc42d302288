"""Entries the shard readers read while a batch is being stored are stored together in the
next batch, not shard by shard; a store that fails stops the readers waiting on it."""

from __future__ import annotations

import asyncio

import pytest

from bricqs_processor.entries import Entry
from bricqs_processor.gathering import Gathering


def entries(stream: str, count: int) -> list[Entry]:
    return [Entry(stream, f"{i}-0", None) for i in range(count)]


def test_readers_arriving_during_a_store_are_stored_together_in_the_next_batch() -> None:
    stored: list[list[str]] = []
    release = asyncio.Event()

    async def store(batch: list[Entry]) -> None:
        stored.append(sorted({e.stream for e in batch}))
        if len(stored) == 1:
            await release.wait()  # the first batch is slow: others hand theirs in meanwhile

    async def main() -> None:
        gathering = Gathering(store)
        first = asyncio.create_task(gathering.store(entries("s0", 3)))
        await asyncio.sleep(0)  # s0 is being stored
        others = [asyncio.create_task(gathering.store(entries(f"s{n}", 2))) for n in range(1, 4)]
        await asyncio.sleep(0)
        assert not any(task.done() for task in others)
        release.set()
        await asyncio.gather(first, *others)

    asyncio.run(main())
    assert stored == [["s0"], ["s1", "s2", "s3"]]


def test_a_failed_store_fails_the_storing_reader_and_stops_the_waiting_ones() -> None:
    started, fail = asyncio.Event(), asyncio.Event()

    async def store(batch: list[Entry]) -> None:
        started.set()
        await fail.wait()
        raise RuntimeError("database gone")

    async def main() -> tuple[BaseException | None, bool]:
        gathering = Gathering(store)
        first = asyncio.create_task(gathering.store(entries("s0", 1)))
        await started.wait()
        second = asyncio.create_task(gathering.store(entries("s1", 1)))
        await asyncio.sleep(0)  # s1 handed in, waiting for the store in progress
        fail.set()
        with pytest.raises(RuntimeError):
            await first
        with pytest.raises(asyncio.CancelledError):
            await second
        return first.exception(), second.cancelled()

    error, cancelled = asyncio.run(main())
    assert isinstance(error, RuntimeError)
    assert cancelled
