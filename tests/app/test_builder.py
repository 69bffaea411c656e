"""The profile builder against the real database: identity, traits, stats, merges."""

import asyncio
import random
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.eventlog import EVENTS
from identity.store import IDENTITIES, MERGES
from profiles.store import PROFILES, TRAIT_HISTORY
from tests.fixtures.events import builder_for, drain, event

Db = AsyncDatabase[dict[str, Any]]


async def _profiles(db: Db) -> list[dict[str, Any]]:
    return [doc async for doc in db[PROFILES].find({"merged_into": None}).sort("_id")]


async def _owner(db: Db, key: str) -> str:
    doc = await db[IDENTITIES].find_one({"_id": key})
    assert doc is not None, key
    return str(doc["profile_id"])


def _comparable(profiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # What a user sees of a profile, without bookkeeping that differs between runs.
    return [
        {
            "identifiers": sorted((i["kind"], i["value"]) for i in p["identifiers"]),
            "traits": p["traits"],
            "stats": p["stats"],
        }
        for p in sorted(profiles, key=lambda p: sorted(str(i) for i in p["identifiers"]))
    ]


async def test_an_identify_creates_a_profile_with_sourced_traits(db: Db) -> None:
    await db[EVENTS].insert_one(
        event(
            "identify",
            user_id="u1",
            anonymous_id="a1",
            traits={"email": "Ada@Example.com", "first_name": "Ada"},
            source="crm",
        )
    )
    assert await drain(builder_for(db)) == 1
    [profile] = await _profiles(db)
    assert profile["traits"]["first_name"]["value"] == "Ada"
    assert profile["traits"]["first_name"]["source"] == "crm"
    assert {(i["kind"], i["value"]) for i in profile["identifiers"]} == {
        ("user_id", "u1"),
        ("anonymous_id", "a1"),
        ("email", "ada@example.com"),
    }
    assert await _owner(db, "email:ada@example.com") == profile["_id"]
    stored = await db[EVENTS].find_one({})
    assert stored is not None
    assert stored["status"] == "applied"
    assert stored["profile_id"] == profile["_id"]


async def test_anonymous_activity_joins_the_person_who_identifies(db: Db) -> None:
    await db[EVENTS].insert_many(
        [
            event("page", anonymous_id="a1", name="Home", at=0),
            event("track", anonymous_id="a1", event="Product Viewed", at=1),
        ]
    )
    builder = builder_for(db)
    await drain(builder)
    await db[EVENTS].insert_one(
        event("identify", user_id="u1", anonymous_id="a1", traits={"first_name": "Ada"}, at=2)
    )
    await drain(builder)
    [profile] = await _profiles(db)
    assert profile["stats"]["event_count"] == 3
    assert profile["stats"]["page_views"] == 1
    assert profile["traits"]["first_name"]["value"] == "Ada"


async def test_two_devices_merge_when_the_person_identifies_on_both(db: Db) -> None:
    builder = builder_for(db)
    await db[EVENTS].insert_many(
        [
            event("page", anonymous_id="phone", at=0),
            event("identify", anonymous_id="laptop", traits={"city": "Paris"}, at=1),
            event("track", anonymous_id="laptop", event="Product Viewed", at=1.5),
        ]
    )
    await drain(builder)
    assert len(await _profiles(db)) == 2
    await db[EVENTS].insert_many(
        [
            event("identify", user_id="u1", anonymous_id="phone", at=2),
            event("identify", user_id="u1", anonymous_id="laptop", traits={"plan": "pro"}, at=3),
        ]
    )
    await drain(builder)
    [survivor] = await _profiles(db)
    assert survivor["traits"]["city"]["value"] == "Paris"
    assert survivor["traits"]["plan"]["value"] == "pro"
    assert survivor["stats"]["event_count"] == 5
    assert survivor["stats"]["event_counts"] == {"Product Viewed": 1}
    assert await _owner(db, "anonymous_id:laptop") == survivor["_id"]
    assert await db[EVENTS].count_documents({"profile_id": survivor["_id"]}) == 5
    assert await db[TRAIT_HISTORY].count_documents({"profile_id": survivor["_id"]}) == 2
    merge = await db[MERGES].find_one({})
    assert merge is not None
    assert merge["status"] == "done"
    assert merge["survivor"] == survivor["_id"]
    tombstone = await db[PROFILES].find_one({"_id": merge["merged"]})
    assert tombstone is not None
    assert tombstone["merged_into"] == survivor["_id"]


async def test_alias_links_the_earlier_id(db: Db) -> None:
    await db[EVENTS].insert_many(
        [
            event("page", anonymous_id="a1", at=0),
            event("alias", user_id="u1", previous_id="a1", at=1),
            event("track", user_id="u1", event="Signed Up", at=2),
        ]
    )
    await drain(builder_for(db))
    [profile] = await _profiles(db)
    assert profile["stats"]["event_count"] == 3


async def test_two_user_ids_sharing_an_email_are_not_merged(db: Db) -> None:
    await db[EVENTS].insert_many(
        [
            event("identify", user_id="u1", traits={"email": "family@example.com"}, at=0),
            event("identify", user_id="u2", traits={"email": "family@example.com"}, at=1),
        ]
    )
    await drain(builder_for(db))
    u1, u2 = await _owner(db, "user_id:u1"), await _owner(db, "user_id:u2")
    assert u1 != u2
    assert await _owner(db, "email:family@example.com") == u1
    assert await db[MERGES].count_documents({}) == 0


async def test_orders_revenue_and_email_engagement_are_counted(db: Db) -> None:
    await db[EVENTS].insert_many(
        [
            event("track", user_id="u1", event="Order Completed", properties={"revenue": 19.99}),
            event("track", user_id="u1", event="Order Completed", properties={"total": "5.01"}),
            event("track", user_id="u1", event="Email Opened", at=1),
            event("track", user_id="u1", event="Email Link Clicked", at=2),
            event("track", user_id="u1", event="odd.name$", at=3),
        ]
    )
    await drain(builder_for(db))
    [profile] = await _profiles(db)
    stats = profile["stats"]
    assert stats["orders"] == 2
    assert stats["revenue_cents"] == 2500
    assert stats["email_opens"] == 1
    assert stats["email_clicks"] == 1
    assert stats["event_counts"]["odd%2Ename%24"] == 1
    assert stats["first_seen"] < stats["last_seen"]


def _story() -> list[dict[str, Any]]:
    events = []
    for person in range(6):
        anon, user = f"a{person}", f"u{person}"
        events += [
            event("page", anonymous_id=anon, at=person),
            event("track", anonymous_id=anon, event="Product Viewed", at=person + 0.1),
            event(
                "identify",
                user_id=user,
                anonymous_id=anon,
                traits={"email": f"p{person}@example.com", "city": f"c{person}"},
                at=person + 0.2,
            ),
            event("identify", anonymous_id=f"b{person}", traits={"city": "late"}, at=person + 0.3),
            event("identify", user_id=user, anonymous_id=f"b{person}", at=person + 0.4),
            event(
                "track",
                user_id=user,
                event="Order Completed",
                properties={"revenue": 10.5},
                at=person + 0.5,
            ),
        ]
    return events


async def test_shuffled_arrival_gives_the_same_profiles(db: Db, mongodb_uri: str) -> None:
    story = _story()
    await db[EVENTS].insert_many([dict(e) for e in story])
    await drain(builder_for(db, batch_size=7))
    in_order = _comparable(await _profiles(db))

    other = db.client[db.name + "_shuffled"]
    try:
        shuffled = [dict(e) for e in story]
        random.Random(7).shuffle(shuffled)
        for i, e in enumerate(shuffled):
            e["received_at"] = e["received_at"].replace(second=0, microsecond=i * 1000)
        await other[EVENTS].insert_many(shuffled)
        await drain(builder_for(other, batch_size=5))
        assert _comparable(await _profiles(other)) == in_order
    finally:
        await db.client.drop_database(other.name)


async def test_two_workers_at_once_give_what_one_gives(db: Db) -> None:
    story = _story()
    await db[EVENTS].insert_many([dict(e) for e in story])
    await drain(builder_for(db))
    alone = _comparable(await _profiles(db))

    other = db.client[db.name + "_pair"]
    try:
        await other[EVENTS].insert_many([dict(e) for e in story])
        await asyncio.gather(
            drain(builder_for(other, batch_size=4)), drain(builder_for(other, batch_size=3))
        )
        await drain(builder_for(other))  # anything a conflict sent back
        assert _comparable(await _profiles(other)) == alone
        assert await other[EVENTS].count_documents({"status": "applied"}) == len(story)
    finally:
        await db.client.drop_database(other.name)


async def test_running_again_changes_nothing(db: Db) -> None:
    await db[EVENTS].insert_many([dict(e) for e in _story()])
    builder = builder_for(db)
    await drain(builder)
    before = await _profiles(db)
    assert await drain(builder) == 0
    assert await _profiles(db) == before


async def test_graphql_shows_recent_activity_and_readable_stats(
    db: Db, client: Any, admin_headers: dict[str, str]
) -> None:
    await db[EVENTS].insert_many(
        [
            event("page", user_id="u1", name="Home", at=0),
            event("track", user_id="u1", event="Product Viewed", at=1),
            event("track", user_id="u1", event="Order Completed", properties={"revenue": 5}, at=2),
        ]
    )
    await drain(builder_for(db))
    query = """query($after: String, $name: String) {
      profile(identity: {kind: "user_id", value: "u1"}) { ... on Profile {
        stats
        events(first: 2, after: $after, name: $name) {
          edges { node { type name source properties } }
          pageInfo { hasNextPage endCursor } } } } }"""

    async def ask(**variables: Any) -> Any:
        response = await client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=admin_headers
        )
        return response.json()["data"]["profile"]

    first = await ask()
    second = await ask(after=first["events"]["pageInfo"]["endCursor"])
    orders = await ask(name="Order Completed")
    names = [e["node"]["name"] for e in first["events"]["edges"] + second["events"]["edges"]]
    assert names == ["Order Completed", "Product Viewed", "Home"]
    assert not second["events"]["pageInfo"]["hasNextPage"]
    assert [e["node"]["properties"] for e in orders["events"]["edges"]] == [{"revenue": 5}]
    assert first["stats"]["revenue"] == 5.0
    assert first["stats"]["event_counts"] == {"Product Viewed": 1, "Order Completed": 1}


async def test_two_workers_seeing_one_new_email_make_one_profile(db: Db) -> None:
    await db[EVENTS].insert_many(
        [
            event("identify", anonymous_id="a", traits={"email": "new@example.com"}, at=0),
            event("identify", anonymous_id="b", traits={"email": "new@example.com"}, at=0),
        ]
    )
    await asyncio.gather(drain(builder_for(db, batch_size=1)), drain(builder_for(db, batch_size=1)))
    await drain(builder_for(db))
    [profile] = await _profiles(db)
    assert await _owner(db, "anonymous_id:a") == await _owner(db, "anonymous_id:b")
    assert profile["stats"]["event_count"] == 2


async def test_a_batch_sent_again_changes_nothing(db: Db, client: Any) -> None:
    from app.ingest.store import SourceStore

    _, write_key = await SourceStore(db).create("web")
    batch = {
        "writeKey": write_key,
        "batch": [
            {"type": "identify", "userId": "u1", "messageId": "m1", "traits": {"plan": "pro"}},
            {
                "type": "track",
                "userId": "u1",
                "messageId": "m2",
                "event": "Order Completed",
                "properties": {"revenue": 12},
            },
        ],
    }
    assert (await client.post("/v1/batch", json=batch)).status_code == 200
    await drain(builder_for(db))
    before = await _profiles(db)
    assert (await client.post("/v1/batch", json=batch)).status_code == 200
    await drain(builder_for(db))
    assert await _profiles(db) == before
    assert await db[EVENTS].count_documents({}) == 2
    assert before[0]["stats"]["orders"] == 1


async def test_an_invalid_email_stays_a_trait_but_never_links_people(db: Db) -> None:
    await db[EVENTS].insert_many(
        [
            event("identify", user_id="u1", traits={"email": "not-an-email", "phone": "12"}),
            event("identify", user_id="u2", traits={"email": "not-an-email"}, at=1),
        ]
    )
    await drain(builder_for(db))
    profiles = await _profiles(db)
    assert len(profiles) == 2
    assert all(p["traits"]["email"]["value"] == "not-an-email" for p in profiles)
    assert await db[IDENTITIES].count_documents({"kind": {"$in": ["email", "phone"]}}) == 0
