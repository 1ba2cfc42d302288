"""Direct calls against the real api and ingest: typed answers, typed problems, and the
client-side bounds (queue, key never logged)."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

from bricqs_client import (
    AsyncClient,
    Client,
    ConflictError,
    NotFoundError,
    Options,
    ValidationError,
)
from bricqs_client.calls import SURFACE
from tests.client.conftest import Failures
from tests.conftest import Tenant

POINTS_RULE = {
    "code": "lesson",
    "name": "Lesson",
    "trigger": {"fact_type": "custom.lesson_done"},
    "amount": {"fixed": 10},
}
DEFINITIONS = {
    "points-rules": POINTS_RULE,
    "badges": {
        "code": "hero",
        "name": "Hero",
        "criteria": [{"criterion": {"fact_type": "custom.lesson_done"}, "threshold": 9}],
    },
    "challenges": {
        "code": "week",
        "name": "Week",
        "objectives": [{"code": "o", "criterion": {"fact_type": "custom.x"}, "target": 2}],
    },
    "streaks": {"code": "daily", "name": "Daily", "trigger": {"fact_type": "custom.lesson_done"}},
    "leaderboards": {"code": "top", "name": "Top", "metric": "points", "period": "all_time"},
    "tiers": {
        "code": "rank",
        "name": "Rank",
        "levels": [{"code": "bronze", "name": "Bronze", "min_points": 0}],
    },
}


def test_track_sync_reads_and_actions_are_typed(
    ingest_url: str, api_url: str, client_tenant: Tenant
) -> None:
    with Client(client_tenant.live_key, ingest_url=ingest_url, api_url=api_url) as bricqs:
        bricqs.create_definition("points-rules", POINTS_RULE)
        bricqs.create_definition("leaderboards", DEFINITIONS["leaderboards"])
        result = bricqs.track_sync("lesson_done", "ada", {"lesson": 1})
        assert result.fact_type == "custom.lesson_done" and not result.duplicate
        assert [p["amount"] for p in result.effects.points] == [10]

        award = bricqs.award_points("ada", 5, "welcome", idempotency_key="gift-1")
        again = bricqs.award_points("ada", 5, "welcome", idempotency_key="gift-1")
        assert (award.balance, again.duplicate, again.entry_id) == (15, True, award.entry_id)
        with pytest.raises(ConflictError) as too_much:
            bricqs.deduct_points("ada", 1000)
        assert (too_much.value.code, too_much.value.extra["balance"]) == (
            "insufficient_balance",
            15,
        )

        state = bricqs.participant_state("ada")
        assert (state.points.balance, state.points.total_earned) == (15, 15)
        assert bricqs.points("ada").balance == 15
        assert [e.participant_id for e in bricqs.leaderboard("top").entries] == ["ada"]
        assert (bricqs.rank("top", "ada").rank, bricqs.rank("top", "ada").score) == (1, 15)
        with pytest.raises(NotFoundError) as unranked:
            bricqs.rank("top", "nobody")
        assert unranked.value.code == "not_ranked"
        assert len(bricqs.transactions("ada").items) == 2


def test_definitions_of_every_kind_go_through_create_get_update_archive(
    ingest_url: str, api_url: str, client_tenant: Tenant
) -> None:
    with Client(client_tenant.test_key, ingest_url=ingest_url, api_url=api_url) as bricqs:
        for kind, body in DEFINITIONS.items():
            created = bricqs.create_definition(kind, body)  # type: ignore[arg-type]
            assert (created.code, created.version, created.status) == (body["code"], 1, "active")
            updated = bricqs.update_definition(kind, created.code, {**body, "name": "Renamed"})  # type: ignore[arg-type]
            assert (updated.version, updated.fields["name"]) == (2, "Renamed")
            assert bricqs.get_definition(kind, created.code).version == 2  # type: ignore[arg-type]
            assert bricqs.archive_definition(kind, created.code).status == "archived"  # type: ignore[arg-type]
            assert bricqs.list_definitions(kind) == []  # type: ignore[arg-type]
            assert [d.code for d in bricqs.list_definitions(kind, include_archived=True)] == [  # type: ignore[arg-type]
                created.code
            ]


def test_problems_are_raised_with_their_code_and_field_errors(
    ingest_url: str, api_url: str, client_tenant: Tenant
) -> None:
    async def scenario() -> None:
        async with AsyncClient(
            client_tenant.live_key, ingest_url=ingest_url, api_url=api_url
        ) as bricqs:
            with pytest.raises(ValidationError) as invalid:
                await bricqs.create_definition("tiers", {"code": "t", "name": "T", "levels": []})
            assert invalid.value.code == "validation_failed"
            assert [e.field for e in invalid.value.errors] == ["levels"]
            with pytest.raises(ValidationError) as bad_event:
                await bricqs.track_sync("bad name!", "ada")
            assert bad_event.value.errors[0].field == "event_name"
            result = await bricqs.track_sync("lesson_done", "ada", idempotency_key="once")
            again = await bricqs.track_sync("lesson_done", "ada", idempotency_key="once")
            assert (again.duplicate, again.event_id) == (True, result.event_id)

    asyncio.run(scenario())


def test_a_full_queue_drops_and_reports_instead_of_growing(client_tenant: Tenant) -> None:
    failures = Failures()
    # Nothing listens there and the sender is never woken: the queue only fills.
    options = Options(max_queue_size=5, flush_interval=3600, on_error=failures)
    bricqs = Client(client_tenant.live_key, ingest_url="http://127.0.0.1:9", options=options)
    keys = [bricqs.track("e", "p") for _ in range(8)]
    assert bricqs.tally.dropped == 3
    assert [(f.event.idempotency_key, f.code) for f in failures.items] == [
        (key, "queue_full") for key in keys[5:]
    ]
    bricqs.close(timeout=0)
    assert [f.code for f in failures.items[3:]] == ["shutdown"] * 5


def test_a_full_queue_in_block_mode_waits_for_the_sender_to_make_room(
    client_tenant: Tenant,
) -> None:
    failures = Failures()
    options = Options(
        max_queue_size=5,
        flush_interval=3600,
        when_full="block",
        block_timeout=30,
        on_error=failures,
    )
    bricqs = Client(client_tenant.live_key, ingest_url="http://127.0.0.1:9", options=options)
    # The sixth track() wakes the sender, which takes the five queued events off the queue.
    for _ in range(8):
        bricqs.track("e", "p")
    assert (bricqs.tally.dropped, failures.items) == (0, [])
    bricqs.close(timeout=0)
    assert bricqs.tally.failed == 8


def test_both_clients_offer_every_direct_call_with_its_parameters() -> None:
    for build in SURFACE:
        for client_class in (Client, AsyncClient):
            method = getattr(client_class, build.__name__)
            assert inspect.signature(method).parameters == inspect.signature(build).parameters
            assert method.__doc__ == build.__doc__
    assert inspect.iscoroutinefunction(AsyncClient.leaderboard)


def test_gzip_batches_are_delivered(ingest_url: str, client_tenant: Tenant) -> None:
    options = Options(gzip=True)
    with Client(client_tenant.live_key, ingest_url=ingest_url, options=options) as bricqs:
        for i in range(3):
            bricqs.track("lesson_done", "ada", {"n": i})
        assert bricqs.flush(10)
        assert (bricqs.tally.delivered, bricqs.tally.failed) == (3, 0)


def test_the_key_is_never_logged(
    ingest_url: str, api_url: str, client_tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with Client(
        client_tenant.live_key, ingest_url=ingest_url, api_url=api_url, options=Options(debug=True)
    ) as bricqs:
        bricqs.track("lesson_done", "ada")
        assert bricqs.flush(10)
        with pytest.raises(NotFoundError):
            bricqs.get_definition("badges", "missing")
        text = repr(bricqs)
    assert any(r.name == "bricqs_client" for r in caplog.records)
    assert client_tenant.live_key not in caplog.text + text


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_batch_events", 101), ("max_batch_bytes", 2 * 1024 * 1024), ("senders", 0)],
)
def test_options_past_the_servers_limits_are_refused(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"Options.{field}"):
        Options(**{field: value})


def test_an_event_over_32_kib_is_reported_not_sent(client_tenant: Tenant) -> None:
    failures = Failures()
    bricqs = Client(client_tenant.live_key, options=Options(on_error=failures))
    key = bricqs.track("e", "p", {"blob": "x" * 33_000})
    [failure] = failures.items
    assert (failure.code, failure.event.idempotency_key, bool(key)) == (
        "event_too_large",
        key,
        True,
    )
    assert bricqs.flush(1) and bricqs.tally.failed == 1
    bricqs.close()
