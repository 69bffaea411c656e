"""The tracking API over HTTP: what each endpoint stores, auth, limits, quarantine, dedup, skew."""

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from app.ingest.store import SourceStore
from app.mongo import Document
from app.settings import Settings
from tests.app.ingest.conftest import SOURCE, all_docs, basic
from tests.conftest import AppFactory, http_client

EVENT_FIELDS = {
    "_id",
    "source",
    "message_id",
    "type",
    "event",
    "name",
    "user_id",
    "anonymous_id",
    "previous_id",
    "group_id",
    "traits",
    "properties",
    "context",
    "integrations",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "status",
    "profile_id",
}


async def post(
    client: httpx.AsyncClient,
    path: str,
    body: Any,
    write_key: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(path, json=body, headers=basic(write_key) | (headers or {}))


async def only_event(db: AsyncDatabase[Document]) -> Document:
    [event] = await all_docs(db, "events")
    return event


def walk_keys(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_keys(item)


# --- what each endpoint stores -------------------------------------------------


async def test_track_stores_the_event_document(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    body = {
        "userId": "u1",
        "event": "Order Completed",
        "properties": {"total": 42.5, "items": [{"sku": "A1", "qty": 2}]},
        "context": {"ip": "203.0.113.9", "library": {"name": "curl"}},
        "integrations": {"All": True},
        "messageId": "m-track-1",
        "timestamp": "2026-03-01T10:00:00.123Z",
    }
    response = await post(client, "/v1/track", body, write_key)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 1, "rejected": []}
    event = await only_event(db)
    assert set(event) == EVENT_FIELDS
    assert event["_id"].startswith("evt_")
    assert len(event["_id"]) == 30
    assert event["source"] == SOURCE
    assert event["message_id"] == "m-track-1"
    assert event["type"] == "track"
    assert event["event"] == "Order Completed"
    assert event["name"] is None
    assert event["user_id"] == "u1"
    assert event["anonymous_id"] is None
    assert event["properties"] == body["properties"]
    assert event["context"] == body["context"]
    assert event["integrations"] == {"All": True}
    assert event["traits"] == {}
    assert event["timestamp"] == datetime(2026, 3, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert event["original_timestamp"] == event["timestamp"]
    assert event["sent_at"] is None
    assert event["status"] == "pending"
    assert event["profile_id"] is None
    assert abs(event["received_at"] - datetime.now(UTC)) < timedelta(seconds=30)


async def test_identify_merges_traits_over_context_traits(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    body = {
        "userId": 42,
        "anonymousId": "anon-1",
        "traits": {"email": "ada@example.com", "plan": "pro"},
        "context": {"traits": {"plan": "free", "city": "London"}},
    }
    response = await post(client, "/v1/identify", body, write_key)
    assert response.status_code == 200, response.text
    event = await only_event(db)
    assert event["type"] == "identify"
    assert event["user_id"] == "42", "numeric ids are stored as strings"
    assert event["anonymous_id"] == "anon-1"
    assert event["traits"] == {"email": "ada@example.com", "plan": "pro", "city": "London"}
    assert event["context"] == {"traits": {"plan": "free", "city": "London"}}


@pytest.mark.parametrize("kind", ["page", "screen"])
async def test_page_and_screen_keep_their_name(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str, kind: str
) -> None:
    body = {"anonymousId": "a1", "name": "Pricing", "properties": {"path": "/pricing"}}
    response = await post(client, f"/v1/{kind}", body, write_key)
    assert response.status_code == 200, response.text
    event = await only_event(db)
    assert (event["type"], event["name"], event["event"]) == (kind, "Pricing", None)
    assert event["properties"] == {"path": "/pricing"}


async def test_group_keeps_group_id_and_traits(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    body = {"userId": "u1", "groupId": "acme", "traits": {"industry": "retail"}}
    response = await post(client, "/v1/group", body, write_key)
    assert response.status_code == 200, response.text
    event = await only_event(db)
    assert (event["type"], event["group_id"]) == ("group", "acme")
    assert event["traits"] == {"industry": "retail"}


async def test_alias_keeps_previous_id(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    response = await post(client, "/v1/alias", {"userId": "u1", "previousId": "a1"}, write_key)
    assert response.status_code == 200, response.text
    event = await only_event(db)
    assert (event["type"], event["user_id"], event["previous_id"]) == ("alias", "u1", "a1")


async def test_batch_stores_every_type(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    batch = [
        {"type": "identify", "userId": "u1", "traits": {"name": "Ada"}},
        {"type": "track", "userId": "u1", "event": "Signed Up"},
        {"type": "page", "anonymousId": "a1", "name": "Home"},
        {"type": "screen", "anonymousId": "a1", "name": "Cart"},
        {"type": "group", "userId": "u1", "groupId": "g1"},
        {"type": "alias", "userId": "u1", "previousId": "a1"},
    ]
    response = await post(client, "/v1/batch", {"batch": batch}, write_key)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 6, "rejected": []}
    stored = await all_docs(db, "events")
    assert sorted(e["type"] for e in stored) == sorted(item["type"] for item in batch)
    assert all(set(e) == EVENT_FIELDS for e in stored)


async def test_a_missing_message_id_is_generated(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    await post(client, "/v1/track", {"userId": "u1", "event": "Viewed"}, write_key)
    event = await only_event(db)
    assert event["message_id"].startswith("kdm_")
    assert len(event["message_id"]) == len("kdm_") + 32


async def test_a_null_anonymous_id_is_accepted_with_a_user_id(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    body = {"userId": "u1", "anonymousId": None, "event": "Viewed"}
    response = await post(client, "/v1/track", body, write_key)
    assert response.status_code == 200, response.text
    assert (await only_event(db))["anonymous_id"] is None


# --- auth ------------------------------------------------------------------------


async def test_the_write_key_may_come_in_the_body(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    body = {"writeKey": write_key, "batch": [{"type": "track", "userId": "u", "event": "E"}]}
    response = await client.post("/v1/batch", json=body)
    assert response.status_code == 200, response.text
    event = await only_event(db)
    assert event["source"] == SOURCE
    assert write_key not in json.dumps(event, default=str)


@pytest.mark.parametrize(
    "how",
    ["unknown-basic", "unknown-body", "missing", "malformed-basic", "revoked"],
)
async def test_a_request_without_a_valid_write_key_is_401(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str, how: str
) -> None:
    unknown = "kwk_" + "x" * 43
    body: dict[str, Any] = {"batch": [{"type": "track", "userId": "u", "event": "E"}]}
    headers: dict[str, str] = {}
    match how:
        case "unknown-basic":
            headers = basic(unknown)
        case "unknown-body":
            body["writeKey"] = unknown
        case "malformed-basic":
            headers = {"authorization": "Basic !!!"}
        case "revoked":
            await SourceStore(db).revoke(SOURCE)
            headers = basic(write_key)
    response = await client.post("/v1/batch", json=body, headers=headers)
    assert response.status_code == 401
    error = response.json()
    assert error["code"] == "unauthorized"
    assert "write key" in error["message"]
    assert await all_docs(db, "events") == []


# --- encoding, JSON and limits ---------------------------------------------------


async def test_a_gzip_body_is_accepted(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    body = json.dumps({"batch": [{"type": "track", "userId": "u", "event": "Zipped"}]})
    response = await client.post(
        "/v1/batch",
        content=gzip.compress(body.encode()),
        headers=basic(write_key) | {"content-encoding": "gzip", "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert (await only_event(db))["event"] == "Zipped"


async def test_a_gzip_bomb_is_refused_as_too_large(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * (20 * 1024 * 1024) + b"]}")
    assert len(bomb) < 100 * 1024
    response = await client.post(
        "/v1/batch", content=bomb, headers=basic(write_key) | {"content-encoding": "gzip"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "request_too_large"


async def test_corrupt_gzip_is_400(client: httpx.AsyncClient, write_key: str) -> None:
    response = await client.post(
        "/v1/batch", content=b"not gzip", headers=basic(write_key) | {"content-encoding": "gzip"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_encoding"


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"a": NaN}', b"[" * 30_000])
async def test_bad_json_is_400_with_code_and_message(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str, content: bytes
) -> None:
    response = await client.post("/v1/track", content=content, headers=basic(write_key))
    assert response.status_code == 400
    error = response.json()
    assert set(error) == {"code", "message"}
    assert error["code"] == "invalid_json"
    assert await all_docs(db, "quarantine") == []


async def test_an_oversize_single_event_is_400(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    body = {"userId": "u", "event": "Big", "properties": {"blob": "x" * 33_000}}
    response = await post(client, "/v1/track", body, write_key)
    assert response.status_code == 400
    assert response.json()["code"] == "request_too_large"
    assert "32768" in response.json()["message"]
    assert await all_docs(db, "events") == []


async def test_an_oversize_batch_is_400(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    item = {"type": "track", "userId": "u", "event": "E", "properties": {"p": "x" * 20_000}}
    response = await post(client, "/v1/batch", {"batch": [item] * 30}, write_key)
    assert response.status_code == 400
    assert response.json()["code"] == "request_too_large"
    assert await all_docs(db, "events") == []


async def test_a_batch_over_the_event_count_is_400(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    items = [{"type": "track", "userId": "u", "event": "E"}] * 2_501
    response = await post(client, "/v1/batch", {"batch": items}, write_key)
    assert response.status_code == 400
    assert response.json()["code"] == "too_many_events"
    assert "2500" in response.json()["message"]
    assert await all_docs(db, "events") == []


async def test_an_oversize_event_in_a_batch_is_quarantined(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    big = {"type": "track", "userId": "u", "event": "E", "properties": {"p": "x" * 40_000}}
    small = {"type": "track", "userId": "u", "event": "E"}
    response = await post(client, "/v1/batch", {"batch": [small, big]}, write_key)
    assert response.status_code == 200, response.text
    [rejected] = response.json()["rejected"]
    assert rejected["index"] == 1
    assert "bytes is over the limit of 32768" in rejected["reason"]
    assert len(await all_docs(db, "events")) == 1
    assert len(await all_docs(db, "quarantine")) == 1


async def test_the_limits_come_from_settings(
    app_factory: AppFactory, settings: Settings, db: AsyncDatabase[Document], write_key: str
) -> None:
    tight = settings.model_copy(update={"ingest_max_batch_events": 2})
    items = [{"type": "track", "userId": "u", "event": "E"}] * 3
    async with app_factory(tight) as app, http_client(app) as client:
        response = await post(client, "/v1/batch", {"batch": items}, write_key)
    assert response.status_code == 400
    assert response.json()["code"] == "too_many_events"


# --- quarantine and strict mode --------------------------------------------------

MIXED = [
    {"type": "track", "userId": "u", "event": "Good", "messageId": "ok-1"},
    {"type": "track", "userId": "u", "messageId": "no-event"},
    {"type": "identify", "messageId": "no-ids", "traits": {"a": 1}},
    {"type": "page", "anonymousId": "a", "messageId": "ok-2"},
    {"type": "teleport", "userId": "u", "messageId": "bad-type"},
]


async def test_a_mixed_batch_stores_the_valid_and_quarantines_the_rest(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    response = await post(client, "/v1/batch", {"batch": MIXED}, write_key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["accepted"] == 2
    assert [(r["messageId"], r["index"]) for r in body["rejected"]] == [
        ("no-event", 1),
        ("no-ids", 2),
        ("bad-type", 4),
    ]
    reasons = {r["messageId"]: r["reason"] for r in body["rejected"]}
    assert reasons["no-event"].startswith("event:")
    assert "userId or anonymousId" in reasons["no-ids"]
    assert reasons["bad-type"].startswith("type:")
    stored = await all_docs(db, "events")
    assert sorted(e["message_id"] for e in stored) == ["ok-1", "ok-2"]
    kept = await all_docs(db, "quarantine")
    assert sorted(q["message_id"] for q in kept) == ["bad-type", "no-event", "no-ids"]
    for row in kept:
        assert set(row) == {"_id", "source", "received_at", "reason", "raw", "message_id"}
        assert row["source"] == SOURCE
        assert isinstance(row["raw"], str)
        assert json.loads(row["raw"])["messageId"] == row["message_id"]
        assert row["reason"] == reasons[row["message_id"]]


async def test_strict_mode_refuses_the_whole_batch_and_stores_nothing(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    response = await post(
        client, "/v1/batch", {"batch": MIXED}, write_key, headers={"x-strict-mode": "1"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_batch"
    assert "3 of 5 events are invalid" in body["message"]
    assert [r["index"] for r in body["rejected"]] == [1, 2, 4]
    assert await all_docs(db, "events") == []
    assert await all_docs(db, "quarantine") == []


async def test_strict_mode_accepts_a_valid_batch(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    valid = [MIXED[0], MIXED[3]]
    response = await post(
        client, "/v1/batch", {"batch": valid}, write_key, headers={"x-strict-mode": "1"}
    )
    assert response.status_code == 200
    assert len(await all_docs(db, "events")) == 2


async def test_track_without_event_is_400_naming_the_field_and_quarantined(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    response = await post(client, "/v1/track", {"userId": "u1", "messageId": "m1"}, write_key)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "invalid_event"
    assert error["message"].startswith("event: required for track events")
    [kept] = await all_docs(db, "quarantine")
    assert kept["_id"] in error["message"]
    assert json.loads(kept["raw"]) == {"userId": "u1", "messageId": "m1", "type": "track"}
    assert await all_docs(db, "events") == []


async def test_a_single_invalid_event_in_strict_mode_is_not_quarantined(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    response = await post(
        client, "/v1/alias", {"userId": "u1"}, write_key, headers={"x-strict-mode": "1"}
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith("previousId: required for alias events")
    assert await all_docs(db, "quarantine") == []


@pytest.mark.parametrize(
    ("properties", "path"),
    [
        ({"$where": "sleep(1000)"}, "properties: key '$where'"),
        ({"a.b": 1}, "properties: key 'a.b'"),
        ({"cart": {"$gt": ""}}, "properties.cart: key '$gt'"),
        ({"cart": [{"ok": 1}, {"x": {"y.z": 2}}]}, "properties.cart[1].x: key 'y.z'"),
        ({"n\u0000ul": 1}, "properties: key 'n\\x00ul'"),
    ],
)
async def test_hostile_keys_are_quarantined_naming_the_key_path(
    client: httpx.AsyncClient,
    db: AsyncDatabase[Document],
    write_key: str,
    properties: dict[str, Any],
    path: str,
) -> None:
    good = {"type": "track", "userId": "u", "event": "Good"}
    hostile = {"type": "track", "userId": "u", "event": "Bad", "properties": properties}
    response = await post(client, "/v1/batch", {"batch": [good, hostile]}, write_key)
    assert response.status_code == 200, response.text
    [rejected] = response.json()["rejected"]
    assert rejected["reason"].startswith(path), rejected["reason"]
    stored = await all_docs(db, "events") + await all_docs(db, "quarantine")
    keys = {key for doc in stored for key in walk_keys(doc)}
    assert not any(k.startswith("$") or "." in k or "\0" in k for k in keys), keys


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("context", {"traits": {"$set": 1}}, "context.traits: key '$set'"),
        ("integrations", {"a": {"b": {"$c": 1}}}, "integrations.a.b: key '$c'"),
        ("traits", {"first name": "Ada"}, "traits.first name: trait key 'first name'"),
        ("traits", {"deep": [[[[[[[[[1]]]]]]]]]}, "traits.deep: trait 'deep' is nested deeper"),
    ],
)
async def test_identify_traits_and_context_are_checked(
    client: httpx.AsyncClient,
    db: AsyncDatabase[Document],
    write_key: str,
    field: str,
    value: dict[str, Any],
    reason: str,
) -> None:
    response = await post(client, "/v1/identify", {"userId": "u", field: value}, write_key)
    assert response.status_code == 400
    assert response.json()["message"].startswith(reason), response.json()["message"]
    assert await all_docs(db, "events") == []


async def test_nesting_is_bounded(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    deep: dict[str, Any] = {}
    for _ in range(20):
        deep = {"k": deep}
    response = await post(
        client, "/v1/track", {"userId": "u", "event": "E", "properties": deep}, write_key
    )
    assert response.status_code == 400
    assert "nested deeper than 16 levels" in response.json()["message"]


# --- dedup, skew, durability, metrics -------------------------------------------


async def test_a_message_id_is_stored_once_in_a_batch_and_when_resent(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    item = {"type": "track", "userId": "u", "event": "Paid", "messageId": "pay-1"}
    first = await post(client, "/v1/batch", {"batch": [item, item]}, write_key)
    assert first.json() == {"success": True, "accepted": 2, "rejected": []}
    again = await post(client, "/v1/track", {**item, "event": "Paid (retry)"}, write_key)
    assert again.status_code == 200
    [event] = await all_docs(db, "events")
    assert event["event"] == "Paid", "the first copy is the one kept"


async def test_the_same_message_id_from_two_sources_is_two_events(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    _, other_key = await SourceStore(db).create("pos")
    item = {"userId": "u", "event": "Paid", "messageId": "shared-1"}
    await post(client, "/v1/track", item, write_key)
    await post(client, "/v1/track", item, other_key)
    assert sorted(e["source"] for e in await all_docs(db, "events")) == ["pos", "web"]


async def test_clock_skew_is_corrected_with_sent_at(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    batch = {
        "sentAt": "2020-01-01T00:00:10.500Z",
        "batch": [
            {"type": "track", "userId": "u", "event": "Batch", "timestamp": "2020-01-01T00:00:00Z"},
            {
                "type": "track",
                "userId": "u",
                "event": "Own",
                "timestamp": "2020-01-01T00:00:00+02:00",
                "sentAt": "2020-01-01T00:00:01+02:00",
            },
            {"type": "track", "userId": "u", "event": "NoTime"},
        ],
    }
    response = await post(client, "/v1/batch", batch, write_key)
    assert response.status_code == 200, response.text
    by_name = {e["event"]: e for e in await all_docs(db, "events")}
    received = by_name["Batch"]["received_at"]
    assert all(e["received_at"] == received for e in by_name.values())
    assert by_name["Batch"]["timestamp"] == received - timedelta(seconds=10.5)
    assert by_name["Batch"]["original_timestamp"] == datetime(2020, 1, 1, tzinfo=UTC)
    assert by_name["Batch"]["sent_at"] == datetime(2020, 1, 1, 0, 0, 10, 500000, tzinfo=UTC)
    assert by_name["Own"]["timestamp"] == received - timedelta(seconds=1)
    assert by_name["NoTime"]["timestamp"] == received
    assert by_name["NoTime"]["original_timestamp"] is None


async def test_without_sent_at_the_timestamp_is_kept(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    body = {"userId": "u", "event": "E", "timestamp": "2021-06-01T12:00:00.987654+01:00"}
    await post(client, "/v1/track", body, write_key)
    event = await only_event(db)
    assert event["timestamp"] == datetime(2021, 6, 1, 11, 0, 0, 987000, tzinfo=UTC)


async def test_a_bad_timestamp_names_the_field(client: httpx.AsyncClient, write_key: str) -> None:
    body = {"userId": "u", "event": "E", "timestamp": "yesterday"}
    response = await post(client, "/v1/track", body, write_key)
    assert response.status_code == 400
    assert response.json()["message"].startswith("timestamp: 'yesterday' is not an ISO 8601")


async def test_events_are_written_journaled(app: FastAPI) -> None:
    store = app.state.kindred.ingest.store
    assert store.events.write_concern.document == {"w": 1, "j": True}
    assert store.quarantine.write_concern.document == {"w": 1, "j": True}


async def test_the_write_concern_is_a_setting(
    app_factory: AppFactory, settings: Settings, db: AsyncDatabase[Document]
) -> None:
    majority = settings.model_copy(update={"events_write_concern": "majority"})
    async with app_factory(majority) as app:
        store = app.state.kindred.ingest.store
        assert store.events.write_concern.document == {"w": "majority", "j": True}


async def test_events_are_counted_by_outcome(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    item = {"type": "track", "userId": "u", "event": "E", "messageId": "once"}
    bad = {"type": "track", "userId": "u"}
    await post(client, "/v1/batch", {"batch": [item, item, bad]}, write_key)
    text = (await client.get("/metrics")).text
    for outcome, count in (("accepted", 1), ("duplicate", 1), ("rejected", 1)):
        line = f'kindred_ingest_events_total{{outcome="{outcome}",source="web"}} {count}.0'
        assert line in text, text
