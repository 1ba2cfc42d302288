"""Participant data rights: erasure (DELETE /participants/{id}) and export.

The erasure check does not trust a list of tables or keys: after the DELETE it scans every
table of the public schema and every Redis key (by type: strings, hashes, lists, sets,
sorted-set members, stream entries) for the participant's id and the ids of their events
and facts, so a table or key added later that holds them fails here.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql

from bricqs.schemas import Envelope, encode_envelope
from bricqs.storage import participant_data, tenants
from bricqs.storage.tenants import Tenant as TenantScope
from bricqs.stream import (
    CONSUMER_GROUP,
    DeadLetter,
    dead_letter_key,
    rate_bucket_key,
    stream_key,
)
from bricqs_devstack.servers import Server
from tests.conftest import Story, Tenant, make_tenant
from tests.webhooks.conftest import hooks, open_api  # noqa: F401 - fixtures

GAMIFY = "/api/v1/gamify"


@pytest.fixture
def rights(hooks: Story) -> Story:  # noqa: F811
    """A tenant's api (webhook URLs on loopback allowed, so outcomes owe outbox messages)
    and sync ingest."""
    return hooks


def define_mechanics(story: Story) -> None:
    """Points, a badge, a challenge, a streak and a leaderboard, and a webhook endpoint."""
    story.define(
        "points-rules",
        {"code": "buy", "name": "Buy", "amount": {"fixed": 10}, "trigger": PURCHASE},
    )
    story.define(
        "badges",
        {"code": "first", "name": "First", "criteria": [{"criterion": PURCHASE, "threshold": 1}]},
    )
    story.define(
        "challenges",
        {
            "code": "three",
            "name": "Three",
            "objectives": [{"code": "o", "criterion": PURCHASE, "target": 3}],
        },
    )
    story.define(
        "badges",
        {
            "code": "shops",
            "name": "Shops",
            "criteria": [
                {
                    "criterion": {**PURCHASE, "aggregate": "distinct", "property": "shop"},
                    "threshold": 5,
                }
            ],
        },
    )
    story.define("streaks", {"code": "daily", "name": "Daily", "trigger": PURCHASE})
    story.define("leaderboards", {"code": "all", "name": "All time"})
    endpoint = story.api.post(
        f"{GAMIFY}/admin/webhooks",
        headers=story.headers,
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]},
    )
    assert endpoint.status_code == 201, endpoint.text


PURCHASE = {"fact_type": "custom.purchase"}


def send(story: Story, participant: str, n: int, key: str | None = None) -> None:
    for i in range(n):
        body: dict[str, Any] = {
            "event_name": "purchase",
            "participant_id": participant,
            "properties": {"shop": f"s{i}"},
        }
        if key and i == 0:
            body["idempotency_key"] = key
        response = story.ingest.post("/api/v1/ingest/events/sync", headers=story.headers, json=body)
        assert response.status_code == 200, response.text


def state(story: Story, participant: str) -> Any:
    return story.get(f"/participants/{participant}/state")


def erase(story: Story, participant: str) -> Any:
    return story.api.delete(f"{GAMIFY}/participants/{participant}", headers=story.headers)


def own_ids(url: str, project_id: str, participant: str) -> set[str]:
    """The ids of the participant's events and facts in the live environment."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT event_id FROM events WHERE project_id = %s AND environment = 'live'"
            " AND participant_id = %s UNION SELECT fact_id FROM facts WHERE project_id = %s"
            " AND environment = 'live' AND participant_id = %s",
            (project_id, participant, project_id, participant),
        ).fetchall()
    return {r[0] for r in rows}


def rows_naming(url: str, project_id: str, needles: set[str]) -> list[tuple[str, str]]:
    """(table, row) of every row of the public schema, in the live environment of the
    project where the table has those columns, whose text holds one of `needles`."""
    hits: list[tuple[str, str]] = []
    with psycopg.connect(url) as conn:
        columns: dict[str, set[str]] = {}
        for table, column in conn.execute(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c"
            " JOIN information_schema.tables t USING (table_schema, table_name)"
            " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
        ):
            columns.setdefault(table, set()).add(column)
        for table, names in sorted(columns.items()):
            where = [sql.SQL("x::text LIKE ANY(%(likes)s)")]
            if "project_id" in names:
                where.append(sql.SQL("x.project_id = %(p)s"))
            if "environment" in names:
                where.append(sql.SQL("x.environment = 'live'"))
            query = sql.SQL("SELECT x::text FROM {} x WHERE ").format(sql.Identifier(table))
            likes = [f"%{n}%" for n in needles]
            for (text,) in conn.execute(
                query + sql.SQL(" AND ").join(where), {"likes": likes, "p": project_id}
            ):
                hits.append((table, text))
    return hits


def redis_values(client: redis.Redis, key: bytes) -> list[bytes]:
    """Everything a key holds, whatever its type, as bytes."""
    kind = client.type(key).decode()
    if kind == "string":
        return [client.get(key) or b""]
    if kind == "hash":
        return [b for pair in client.hgetall(key).items() for b in pair]
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
    if kind == "stream":
        return [v for _, fields in client.xrange(key) for pair in fields.items() for v in pair]
    return [kind.encode()]


def keys_naming(client: redis.Redis, needles: set[str], foreign: set[str]) -> list[bytes]:
    """Keys whose name or content holds one of `needles`, and none of `foreign` (other
    tenants' project ids)."""
    hits = []
    for key in client.scan_iter(count=1000):
        blobs = [key, *redis_values(client, key)]
        if any(f.encode() in b for f in foreign for b in blobs):
            continue
        if any(n.encode() in b for n in needles for b in blobs):
            hits.append(key)
    return hits


def envelope_of(tenant_project: str, participant: str) -> Envelope:
    """An event of the participant as ingest queues it."""
    now = datetime.now(UTC)
    return Envelope(
        event_id=f"evt_queued{uuid.uuid4().hex[:8]}",
        project_id=tenant_project,
        environment="live",
        event_name="purchase",
        participant_id=participant,
        properties={},
        occurred_at=now,
        received_at=now,
    )


def queue(client: redis.Redis, tenant_project: str, participant: str) -> bytes:
    """An event of the participant on shard 0's stream."""
    envelope = envelope_of(tenant_project, participant)
    entry: bytes = client.xadd(stream_key(0), {"e": encode_envelope(envelope)})
    return entry


@pytest.fixture
def pid() -> str:
    return f"ann-{uuid.uuid4().hex[:10]}"


def test_erasure_leaves_no_row_or_key_holding_the_participant_and_no_other_total_changes(
    rights: Story, postgres_server: Server, redis_client: redis.Redis, pid: str
) -> None:
    url, story = postgres_server.url, rights
    other = make_tenant(url, "other project")
    other_story = Story(story.api, story.ingest, other, other.live_key)
    test_env = Story(story.api, story.ingest, story.tenant, story.tenant.test_key)
    for s in (story, other_story, test_env):
        define_mechanics(s)
    bob = f"bob-{uuid.uuid4().hex[:10]}"
    send(story, pid, 6, key=f"{pid}-first")
    send(story, bob, 2)
    story.api.patch(
        f"{GAMIFY}/participants/{pid}", headers=story.headers, json={"timezone": "Asia/Tokyo"}
    )
    # The rate bucket of the participant's tokens, as ingest keeps it (`bricqs.web.auth`).
    bucket = rate_bucket_key(f"participant:{story.tenant.project_id}:live:{pid}")
    redis_client.hset(bucket, mapping={"tokens": "9", "ts": "1"})
    send(other_story, pid, 2, key=f"{pid}-first")
    send(test_env, pid, 4)
    redis_client.xgroup_create(stream_key(0), CONSUMER_GROUP, id="$", mkstream=True)
    queue(redis_client, other.project_id, pid)  # another project's queued event stays
    payload = encode_envelope(envelope_of(story.tenant.project_id, pid))
    dead = DeadLetter(payload, "rejected", stream_key(0), "1-0", 1)
    redis_client.xadd(dead_letter_key(0), dead.fields())
    # A sorted set as a Redis leaderboard would keep one, in both projects.
    boards = {p: f"bricqs:lb:{{{p}}}:live:all" for p in (story.tenant.project_id, other.project_id)}
    for board_key in boards.values():
        redis_client.zadd(board_key, {pid: 60, bob: 20})
    needles = {pid} | own_ids(url, story.tenant.project_id, pid)
    assert rows_naming(url, story.tenant.project_id, needles)
    assert keys_naming(redis_client, needles, {other.project_id})
    before = {
        "bob": state(story, bob),
        "other": state(other_story, pid),
        "test": state(test_env, pid),
        "board": story.get("/leaderboards/all"),
    }
    assert any(e["participant_id"] == pid for e in before["board"]["entries"])

    response = erase(story, pid)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "erased" and response.json()["rows_erased"] > 0
    assert rows_naming(url, story.tenant.project_id, needles) == []
    assert keys_naming(redis_client, needles, {other.project_id}) == []
    assert state(story, bob) == before["bob"]
    assert state(other_story, pid) == before["other"]
    assert state(test_env, pid) == before["test"]
    board = story.get("/leaderboards/all")
    assert [e["participant_id"] for e in board["entries"]] == [bob]
    assert redis_client.xlen(stream_key(0)) == 1
    assert not redis_client.exists(bucket)
    assert redis_client.xlen(dead_letter_key(0)) == 0
    assert redis_client.zrange(boards[story.tenant.project_id], 0, -1) == [bob.encode()]
    assert len(redis_client.zrange(boards[other.project_id], 0, -1)) == 2


def test_erasure_is_recorded_without_the_id_and_a_second_delete_answers_the_same(
    rights: Story, postgres_server: Server, pid: str
) -> None:
    define_mechanics(rights)
    send(rights, pid, 3)
    first = erase(rights, pid)
    second = erase(rights, pid)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    with psycopg.connect(postgres_server.url) as conn:
        records = conn.execute(
            "SELECT requested_by, completed_at IS NOT NULL, rows_erased, r::text"
            " FROM participant_erasures r WHERE project_id = %s",
            (rights.tenant.project_id,),
        ).fetchall()
    assert len(records) == 1
    requested_by, completed, rows, text = records[0]
    assert (requested_by, completed) == (rights.tenant.live_key_id, True)
    assert rows == first.json()["rows_erased"] > 0
    assert pid not in text
    # Sent again afterwards, the participant starts anew, and is erased anew.
    send(rights, pid, 1)
    third = erase(rights, pid)
    assert third.status_code == 200 and third.json()["erasure_id"] != first.json()["erasure_id"]
    assert state(rights, pid)["points"]["balance"] == 0


def test_erasure_waits_for_the_participants_queued_events(
    rights: Story, redis_client: redis.Redis, pid: str
) -> None:
    send(rights, pid, 1)
    redis_client.xgroup_create(stream_key(0), CONSUMER_GROUP, id="$", mkstream=True)
    entry = queue(redis_client, rights.tenant.project_id, pid)
    waiting = erase(rights, pid)
    assert waiting.status_code == 202, waiting.text
    assert waiting.json()["status"] == "waiting_for_queued_events"
    queued = rights.get(f"/participants/{pid}/export")["queued_events"]
    assert [(e["participant_id"], e["event_name"]) for e in queued] == [(pid, "purchase")]
    assert "Retry-After" in waiting.headers
    # Delivered but not acknowledged is still not processed.
    redis_client.xreadgroup(CONSUMER_GROUP, "p1", {stream_key(0): ">"}, count=10)
    assert erase(rights, pid).status_code == 202
    redis_client.xack(stream_key(0), CONSUMER_GROUP, entry)
    done = erase(rights, pid)
    assert done.status_code == 200, done.text
    assert done.json()["erasure_id"] == waiting.json()["erasure_id"]
    assert redis_client.xrange(stream_key(0)) == []


def test_export_holds_the_state_the_state_api_shows_and_every_stored_row(
    rights: Story, pid: str
) -> None:
    define_mechanics(rights)
    send(rights, pid, 4)
    shown = state(rights, pid)
    exported = rights.get(f"/participants/{pid}/export")
    assert {"participant_id": pid, **exported["state"]} == shown
    stored = exported["stored"]
    assert len(stored["events"]) == 4 and len(stored["points_ledger"]) == 4
    assert {f["fact_type"] for f in stored["facts"]} >= {"custom.purchase", "badge.awarded"}
    assert [b["badge_code"] for b in stored["badge_awards"]] == ["first"]
    assert stored["challenge_completions"][0]["challenge_code"] == "three"
    assert stored["streak_state"][0]["streak_code"] == "daily"
    assert stored["webhook_messages"]
    assert all(row["participant_id"] == pid for row in stored["facts"])


def test_export_and_erasure_stay_in_the_callers_environment_and_need_admin(
    rights: Story, postgres_server: Server, pid: str
) -> None:
    send(rights, pid, 2)
    test_env = Story(rights.api, rights.ingest, rights.tenant, rights.tenant.test_key)
    assert test_env.get(f"/participants/{pid}/export")["stored"]["events"] == []
    assert erase(test_env, pid).json()["rows_erased"] == 0
    assert len(rights.get(f"/participants/{pid}/export")["stored"]["events"]) == 2
    reader = Story(
        rights.api, rights.ingest, rights.tenant, read_write_key(postgres_server.url, rights.tenant)
    )
    assert erase(reader, pid).status_code == 403
    export = reader.api.get(f"{GAMIFY}/participants/{pid}/export", headers=reader.headers)
    assert export.status_code == 403
    assert len(rights.get(f"/participants/{pid}/export")["stored"]["events"]) == 2


def read_write_key(url: str, tenant: Tenant) -> str:
    """A live key of the tenant with the read and write scopes, not admin."""

    async def create() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            _, plain = await tenants.create_key(
                conn, tenant.project_id, "live", scopes=("read", "write")
            )
        return plain

    return asyncio.run(create())


def test_an_erasure_cut_short_is_resumed_by_the_next_delete_with_its_committed_batches_kept(
    rights: Story, postgres_server: Server, pid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bricqs_api import data_rights

    define_mechanics(rights)
    send(rights, pid, 3)
    total = len(own_ids(postgres_server.url, rights.tenant.project_id, pid))
    erase_batch = data_rights.participant_data.erase_batch
    calls = 0

    async def crash_after_one_batch(*args: Any) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("the api worker dies here")
        return await erase_batch(*args)

    monkeypatch.setattr(data_rights, "ERASE_BATCH_ROWS", 2)
    monkeypatch.setattr(data_rights.participant_data, "erase_batch", crash_after_one_batch)
    assert erase(rights, pid).status_code == 500
    with psycopg.connect(postgres_server.url) as conn:
        row = conn.execute(
            "SELECT erasure_id, rows_erased, completed_at FROM participant_erasures"
            " WHERE project_id = %s",
            (rights.tenant.project_id,),
        ).fetchone()
    assert row is not None and row[1:] == (2, None)
    assert own_ids(postgres_server.url, rights.tenant.project_id, pid)
    monkeypatch.setattr(data_rights.participant_data, "erase_batch", erase_batch)
    resumed = erase(rights, pid)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["erasure_id"] == row[0]
    assert own_ids(postgres_server.url, rights.tenant.project_id, pid) == set()
    assert resumed.json()["rows_erased"] > total


def test_concurrent_erasures_of_one_participant_share_one_record(
    postgres_server: Server, tenant: Tenant, pid: str
) -> None:
    async def start_twice() -> tuple[str, str]:
        url = postgres_server.url
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            scope = TenantScope(tenant.project_id, "live")
            first = await participant_data.start_erasure(conn, scope, pid, "key_a")
            second = await participant_data.start_erasure(conn, scope, pid, "key_b")
        return first.erasure_id, second.erasure_id

    first, second = asyncio.run(start_twice())
    assert first == second


def test_a_table_added_later_keyed_by_participant_is_exported_and_erased_unchanged(
    rights: Story, postgres_server: Server, pid: str
) -> None:
    table = f"later_scores_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (project_id text, environment text, participant_id text,"
                " score int)"
            ).format(sql.Identifier(table))
        )
        try:
            conn.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, 'live', %s, 7), (%s, 'live', 'bob', 3)").format(
                    sql.Identifier(table)
                ),
                (rights.tenant.project_id, pid, rights.tenant.project_id),
            )
            exported = rights.get(f"/participants/{pid}/export")["stored"][table]
            assert exported == [{"participant_id": pid, "score": 7}]
            assert erase(rights, pid).json()["rows_erased"] == 1
            left = conn.execute(
                sql.SQL("SELECT participant_id FROM {}").format(sql.Identifier(table))
            )
            assert left.fetchall() == [("bob",)]
        finally:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
