"""The processor's young generation holds a whole batch: storing a batch of the default
size, with the benchmark's 20 rules, triggers no garbage collection. Each one would walk
every object the batch keeps alive and free none of them (they are all still in use)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from bench import workload
from bench.rule_engine import rules
from bricqs.mechanics.cache import RuleCache
from bricqs.pipeline import process_envelopes
from bricqs.runtime import GC_THRESHOLDS, tune_garbage_collector
from bricqs.schemas import decode_envelope
from bricqs.storage.tenants import Tenant
from bricqs_devstack.servers import Server
from bricqs_processor.main import young_generation
from bricqs_processor.settings import ProcessorSettings
from tests.conftest import make_tenant
from tests.leaderboards.helpers import define


@pytest.fixture
def restored_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def with_twenty_rules(url: str) -> Tenant:
    tenant = Tenant(make_tenant(url).project_id, "live")

    async def define_all() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for segment, raw in rules(20):
                await define(conn, tenant, segment, raw)

    asyncio.run(define_all())
    return tenant


def collections_while_storing(url: str, tenant: Tenant, young: int, seed: int) -> int:
    """Young collections while one batch of the default size is decoded and stored with
    the processor's thresholds at `young`."""
    size = ProcessorSettings().batch_size
    entries = workload.envelopes(tenant.project_id, size, seed=seed)
    started: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    async def store() -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            await process_envelopes(
                conn,
                [decode_envelope(e) for e in entries],
                idempotency_ttl=timedelta(days=1),
                rules_for=RuleCache(refresh_seconds=0),
                report=False,
            )

    tune_garbage_collector(young)
    gc.collect()  # counts from zero, as after the previous batch's collection
    gc.callbacks.append(count)
    try:
        asyncio.run(store())
    finally:
        gc.callbacks.remove(count)
    return len(started)


@pytest.mark.usefixtures("restored_thresholds")
def test_a_default_batch_with_twenty_rules_triggers_no_collection(
    postgres_server: Server,
) -> None:
    url = postgres_server.url
    tenant = with_twenty_rules(url)
    # The services' default young generation collects during such a batch: what the
    # processor's own threshold avoids.
    assert collections_while_storing(url, tenant, GC_THRESHOLDS[0], seed=1) > 0
    young = young_generation(ProcessorSettings().batch_size)
    assert collections_while_storing(url, tenant, young, seed=2) == 0
