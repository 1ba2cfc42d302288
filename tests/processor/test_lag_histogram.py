"""The end-to-end lag histogram: read close to its value just over the 1 s SLO, and
observed a batch at a time as a Prometheus histogram would be."""

from __future__ import annotations

import itertools

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench.processor import histogram_quantile
from bricqs_processor.metrics import LAG_BUCKETS, BatchHistogram


def test_a_p99_just_over_the_slo_is_read_close_to_its_value() -> None:
    registry = CollectorRegistry()
    lag = Histogram(
        "bricqs_processor_end_to_end_lag_seconds", "lag", buckets=LAG_BUCKETS, registry=registry
    )
    # 98 % at 0.1 s, 2 % spread over 1.0-1.3 s: the true p99 is about 1.15 s.
    for _ in range(9_800):
        lag.observe(0.1)
    for n in range(200):
        lag.observe(1.0 + 0.3 * (n + 0.5) / 200)
    p99 = histogram_quantile(generate_latest(registry).decode(), 0.99)
    # With no bucket between 1 and 2.5 s it read 1.75 s.
    assert 1.0 < p99 <= 1.3


def test_a_batch_histogram_exposes_what_a_histogram_would() -> None:
    """The processor observes its lag a batch at a time (`BatchHistogram`); its
    exposition must be a Prometheus histogram's, bucket for bucket, bounds included."""
    values = [0.0, *LAG_BUCKETS, 100.0] + [0.0007 * n for n in range(3_000)]
    values += [bound + 1e-9 for bound in LAG_BUCKETS] + [bound - 1e-9 for bound in LAG_BUCKETS]
    batches: list[list[float]] = [[]]  # sizes 0 to 300, an empty batch among them
    start, sizes = 0, itertools.cycle([1, 7, 50, 300, 0])
    while start < len(values):
        size = next(sizes)
        batches.append(values[start : start + size])
        start += size

    registry = CollectorRegistry()
    reference = Histogram(
        "bricqs_processor_end_to_end_lag_seconds", "lag", buckets=LAG_BUCKETS, registry=registry
    )
    batched_registry = CollectorRegistry()
    batched = BatchHistogram(
        "bricqs_processor_end_to_end_lag_seconds",
        "lag",
        buckets=LAG_BUCKETS,
        registry=batched_registry,
    )
    for batch in batches:
        for value in batch:
            reference.observe(value)
        batched.observe_many(batch)

    def samples(text: bytes) -> dict[str, float]:
        return {
            name: float(value)
            for name, value in (
                line.rsplit(" ", 1) for line in text.decode().splitlines() if line[0] != "#"
            )
            if not name.endswith("_created")
        }

    expected, found = samples(generate_latest(registry)), samples(generate_latest(batched_registry))
    total = "bricqs_processor_end_to_end_lag_seconds_sum"
    # The sum is added in another order (a batch's, then the batches'): equal to rounding.
    assert found.pop(total) == pytest.approx(expected.pop(total), rel=1e-12)
    assert found == expected
    assert expected["bricqs_processor_end_to_end_lag_seconds_count"] == len(values)
