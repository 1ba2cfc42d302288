"""What the api reads back of stored events: the event catalog, a participant's facts and
attributes, field by field."""

from __future__ import annotations

from tests.conftest import Story


def test_the_catalog_counts_each_event_name_with_its_property_types(story: Story) -> None:
    story.send("purchase", "ann", {"amount": 5, "sku": "a"})
    story.send("purchase", "bob", {"amount": 2.5, "gift": True})
    story.send("login", "ann")
    response = story.api.get("/api/v1/events/catalog", headers=story.headers)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [(i["event_name"], i["count"]) for i in items] == [("login", 1), ("purchase", 2)]
    assert items[0]["properties"] == {}
    assert items[1]["properties"] == {
        "amount": ["number"],
        "gift": ["boolean"],
        "sku": ["string"],
    }
    assert all(i["first_seen_at"] <= i["last_seen_at"] for i in items)


def test_facts_read_back_with_their_event_and_properties(story: Story) -> None:
    sent = story.send("purchase", "ann", {"amount": 5})
    story.send("login", "ann")
    page = story.get("/participants/ann/facts", fact_type="custom.purchase")
    assert page["next_cursor"] is None
    [fact] = page["items"]
    assert set(fact) == {
        "fact_id",
        "fact_type",
        "event_id",
        "properties",
        "occurred_at",
        "created_at",
    }
    assert (fact["fact_type"], fact["event_id"], fact["properties"]) == (
        "custom.purchase",
        sent["event_id"],
        {"amount": 5},
    )
    assert len(story.get("/participants/ann/facts")["items"]) == 2


def test_attributes_merge_and_a_new_participant_is_created(story: Story) -> None:
    path = "/api/v1/gamify/participants/newcomer"
    first = story.api.patch(path, headers=story.headers, json={"timezone": "Europe/Paris"})
    assert first.status_code == 200, first.text
    assert first.json() == {
        "participant_id": "newcomer",
        "attributes": {"timezone": "Europe/Paris"},
    }
    again = story.api.patch(path, headers=story.headers, json={"timezone": "Asia/Tokyo"})
    assert again.json()["attributes"] == {"timezone": "Asia/Tokyo"}
