"""Admins review and replay quarantined events over GraphQL."""

import json
from typing import Any

import httpx
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import KeyStore, Scope
from app.ingest.store import EventStore, SourceStore, now_ms
from app.mongo import Document
from tests.app.ingest.conftest import all_docs, basic
from tests.fixtures.graphql import gql

Db = AsyncDatabase[Document]

LIST = """
query($first: Int, $after: String) {
  quarantine(first: $first, after: $after) {
    edges { cursor node { id source receivedAt reason messageId raw replayedAt } }
    pageInfo { hasNextPage endCursor }
  }
}"""

REPLAY = """
mutation($ids: [ID!]) {
  replayQuarantine(ids: $ids) { stored duplicates stillInvalid notFound replayed }
}"""

MISSING_EVENT = "event: required for track events"


async def quarantine_by_batch(client: httpx.AsyncClient, db: Db, *message_ids: str) -> None:
    """Posts a batch of track events without `event`, which ingest quarantines."""
    _, write_key = await SourceStore(db).create("web")
    batch = [{"type": "track", "userId": "u1", "messageId": m} for m in message_ids]
    response = await client.post("/v1/batch", json={"batch": batch}, headers=basic(write_key))
    assert response.status_code == 200, response.text
    assert len(response.json()["rejected"]) == len(message_ids)


async def quarantine_row(db: Db, event: dict[str, Any]) -> str:
    """Keeps an event in quarantine directly, as if an older Kindred had refused it."""
    [qid] = await EventStore(db).add_to_quarantine(
        [(event.get("messageId"), "refused by an older release", json.dumps(event))],
        source="web",
        received_at=now_ms(),
    )
    return qid


async def test_quarantine_is_refused_to_a_key_without_the_admin_scope(
    client: httpx.AsyncClient, db: Db
) -> None:
    await quarantine_by_batch(client, db, "m-bad")
    _, secret = await KeyStore(db).create(name="reader", scopes=[Scope.PROFILES_READ])
    reader = {"authorization": f"Bearer {secret}"}
    listed = await gql(client, reader, LIST)
    replayed = await gql(client, reader, REPLAY)
    for body in (listed, replayed):
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "forbidden"
        assert "admin" in body["errors"][0]["message"]
    [kept] = await all_docs(db, "quarantine")
    assert "replayed_at" not in kept


async def test_quarantine_lists_the_event_a_batch_rejected(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    await quarantine_by_batch(client, db, "m-bad")
    body = await gql(client, admin_headers, LIST)
    [edge] = body["data"]["quarantine"]["edges"]
    node = edge["node"]
    assert node["id"].startswith("qtn_")
    assert node["source"] == "web"
    assert node["reason"] == MISSING_EVENT
    assert node["messageId"] == "m-bad"
    assert node["receivedAt"] is not None
    assert node["replayedAt"] is None
    raw = json.loads(node["raw"])
    assert raw["messageId"] == "m-bad"
    assert raw["type"] == "track"
    assert "writeKey" not in raw
    assert body["data"]["quarantine"]["pageInfo"] == {
        "hasNextPage": False,
        "endCursor": edge["cursor"],
    }


async def test_quarantine_pages_in_id_order_with_opaque_cursors(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    await quarantine_by_batch(client, db, "m-1", "m-2", "m-3")
    first = (await gql(client, admin_headers, LIST, first=2))["data"]["quarantine"]
    after = first["pageInfo"]["endCursor"]
    rest = (await gql(client, admin_headers, LIST, first=2, after=after))["data"]["quarantine"]
    forged = await gql(client, admin_headers, LIST, after=first["edges"][0]["node"]["id"])
    edges = first["edges"] + rest["edges"]
    ids = [e["node"]["id"] for e in edges]
    # Rows of one batch share a millisecond, so only id order is defined among them.
    assert ids == sorted(ids)
    assert sorted(e["node"]["messageId"] for e in edges) == ["m-1", "m-2", "m-3"]
    assert (len(first["edges"]), len(rest["edges"])) == (2, 1)
    assert first["pageInfo"]["hasNextPage"] is True
    assert rest["pageInfo"]["hasNextPage"] is False
    assert forged["errors"][0]["extensions"]["code"] == "invalid_cursor"


async def test_quarantine_refuses_a_page_size_out_of_bounds(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = await gql(client, admin_headers, LIST, first=0)
    assert body["errors"][0]["extensions"]["code"] == "invalid_page_size"


async def test_replaying_a_still_invalid_event_keeps_it_with_its_replay_time(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    await quarantine_by_batch(client, db, "m-bad")
    [edge] = (await gql(client, admin_headers, LIST))["data"]["quarantine"]["edges"]
    body = await gql(client, admin_headers, REPLAY, ids=[edge["node"]["id"]])
    assert body["data"]["replayQuarantine"] == {
        "stored": 0,
        "duplicates": 0,
        "stillInvalid": 1,
        "notFound": 0,
        "replayed": 1,
    }
    [after] = (await gql(client, admin_headers, LIST))["data"]["quarantine"]["edges"]
    assert after["node"]["id"] == edge["node"]["id"]
    assert after["node"]["reason"] == MISSING_EVENT
    assert after["node"]["replayedAt"] is not None
    assert await all_docs(db, "events") == []


async def test_replaying_a_valid_event_stores_it_and_releases_it(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    qid = await quarantine_row(
        db, {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-ok"}
    )
    body = await gql(client, admin_headers, REPLAY, ids=[qid, "qtn_unknown"])
    assert body["data"]["replayQuarantine"] == {
        "stored": 1,
        "duplicates": 0,
        "stillInvalid": 0,
        "notFound": 1,
        "replayed": 1,
    }
    [event] = await all_docs(db, "events")
    assert (event["message_id"], event["event"], event["source"]) == ("m-ok", "Signed Up", "web")
    listed = await gql(client, admin_headers, LIST)
    assert listed["data"]["quarantine"]["edges"] == []


async def test_replay_without_ids_replays_the_whole_quarantine(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    await quarantine_by_batch(client, db, "m-bad")
    valid = {"type": "identify", "userId": "u2", "traits": {"plan": "pro"}, "messageId": "m-id"}
    await quarantine_row(db, valid)
    # The same messageId kept twice: the second replayed copy is already stored.
    await quarantine_row(db, valid)
    body = await gql(client, admin_headers, REPLAY)
    assert body["data"]["replayQuarantine"] == {
        "stored": 1,
        "duplicates": 1,
        "stillInvalid": 1,
        "notFound": 0,
        "replayed": 3,
    }
    [left] = (await gql(client, admin_headers, LIST))["data"]["quarantine"]["edges"]
    assert left["node"]["messageId"] == "m-bad"
    assert [e["message_id"] for e in await all_docs(db, "events")] == ["m-id"]
