"""The demo data: a seeded history, sent with the real Segment SDK, that becomes profiles."""

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from rapidfuzz.distance import Levenshtein

from app.demo import (
    DEMO_SOURCE,
    CallType,
    Demo,
    DuplicateKind,
    FirstStartLoader,
    generate,
    send,
)
from app.eventlog import EventLog
from app.ingest.store import SourceStore
from app.mongo import Document
from identity.normalize import phone_key
from tests.conftest import LiveServer, make_settings
from tests.fixtures.cli import run_kindred

NOW = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)

PROFILE_QUERY = """
query Demo($uid: String!) {
  profile(identity: {kind: "user_id", value: $uid}) {
    ... on Profile { traits(keys: ["first_name", "last_name", "email"]) stats }
    ... on ProfileNotFound { message }
  }
}
"""


@pytest.fixture(scope="module")
def demo() -> Demo:
    """A demo large enough to hold every feature (two devices, each duplicate kind)."""
    return generate(seed=7, people=150, days=90, now=NOW)


def test_the_same_seed_gives_the_same_history() -> None:
    first = generate(seed=3, people=25, days=30, now=NOW)
    again = generate(seed=3, people=25, days=30, now=NOW)
    other = generate(seed=4, people=25, days=30, now=NOW)
    assert first == again
    assert [c.message_id for c in first.calls] == [c.message_id for c in again.calls]
    assert [p.identity for p in first.people] != [p.identity for p in other.people]


def test_a_smaller_demo_is_the_start_of_a_larger_one(demo: Demo) -> None:
    small = generate(seed=7, people=40, days=90, now=NOW)
    assert small.people == demo.people[:40]
    larger = {c.message_id: c for c in demo.calls}
    assert all(larger[c.message_id] == c for c in small.calls)


def test_the_history_holds_every_kind_of_event_within_the_period(demo: Demo) -> None:
    names = Counter(c.name for c in demo.calls if c.type is CallType.TRACK)
    for event in (
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
        "Email Opened",
        "Email Link Clicked",
    ):
        assert names[event] > 0, event
    assert any(c.type is CallType.PAGE for c in demo.calls)
    traits = {k for c in demo.calls if c.type is CallType.IDENTIFY for k in c.data}
    assert {"first_name", "last_name", "email", "phone", "city", "postcode", "address"} <= traits
    orders = [c for c in demo.calls if c.name == "Order Completed"]
    assert all(o.data["revenue"] > 0 and o.data["products"] and o.data["order_id"] for o in orders)
    assert len({o.data["order_id"] for o in orders}) == len(orders)
    assert all(NOW - timedelta(days=90) <= c.timestamp < NOW for c in demo.calls)
    assert len({c.message_id for c in demo.calls}) == len(demo.calls)
    assert [c.timestamp for c in demo.calls] == sorted(c.timestamp for c in demo.calls)


def test_two_device_people_browse_anonymously_on_both_then_identify_on_both(demo: Demo) -> None:
    people = demo.two_device_people()
    assert people
    for person in people:
        for device in person.anonymous_ids:
            calls = [c for c in demo.calls if c.anonymous_id == device]
            first_identify = next(i for i, c in enumerate(calls) if c.type is CallType.IDENTIFY)
            assert first_identify > 0
            assert all(c.user_id is None for c in calls[:first_identify])
            assert calls[first_identify].user_id == person.user_id


def test_typo_duplicates_are_second_accounts_close_to_the_original(demo: Demo) -> None:
    kinds = {d.kind for d in demo.duplicates}
    assert kinds == set(DuplicateKind)
    for pair in demo.duplicates:
        original, copy = pair.original.identity, pair.duplicate.identity
        assert pair.duplicate.user_id not in (None, pair.original.user_id)
        assert original.email != copy.email
        if pair.kind is DuplicateKind.EMAIL_TYPO:
            assert (copy.first_name, copy.last_name) == (original.first_name, original.last_name)
            assert Levenshtein.distance(original.email, copy.email) == 1
        elif pair.kind is DuplicateKind.NAME_TYPO_SAME_PHONE:
            assert copy.first_name != original.first_name
            assert sorted(copy.first_name) == sorted(original.first_name)
            assert copy.phone != original.phone
            assert phone_key(copy.phone) == phone_key(original.phone) is not None
        else:
            assert Levenshtein.distance(original.last_name, copy.last_name) == 1
            assert (copy.address, copy.postcode) == (original.address, original.postcode)


# --- end to end, through a live server with the profile builder running ----------------


@pytest.fixture
def building_server(
    mongodb_uri: str, database_name: str, db: AsyncDatabase[Document]
) -> Iterator[LiveServer]:
    """A live server on the test database that applies events to profiles as they arrive."""
    server = LiveServer(make_settings(mongodb_uri, database_name, worker_in_process=True))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def wait_until_applied(
    db: AsyncDatabase[Document], expected: int, *, seconds: float = 30
) -> None:
    """Waits (30 s by default) until `expected` events are stored and none is pending."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stored = await db["events"].count_documents({})
        pending = await EventLog(db).pending_count()
        if stored == expected and pending == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{pending} of {stored} events still pending (expected {expected})")


async def test_a_small_demo_becomes_profiles_with_names_and_order_stats(
    building_server: LiveServer, db: AsyncDatabase[Document], admin_headers: dict[str, str]
) -> None:
    _, write_key = await SourceStore(db).create(DEMO_SOURCE)
    demo = generate(seed=11, people=30, days=90, now=datetime.now(UTC))
    sent = await asyncio.to_thread(
        send, demo.calls, url=building_server.url, write_key=write_key, batch_size=200
    )
    assert sent.events == len(demo.calls)
    await wait_until_applied(db, len(demo.calls))

    revenue: dict[str, float] = defaultdict(float)
    orders: Counter[str] = Counter()
    for call in demo.calls:
        if call.name == "Order Completed" and call.user_id is not None:
            orders[call.user_id] += 1
            revenue[call.user_id] += call.data["revenue"]
    assert orders
    async with httpx.AsyncClient(base_url=building_server.url, headers=admin_headers) as http:
        for person in demo.people:
            if person.user_id is None:
                continue
            response = await http.post(
                "/graphql", json={"query": PROFILE_QUERY, "variables": {"uid": person.user_id}}
            )
            profile = response.json()["data"]["profile"]
            assert profile["traits"]["first_name"] == person.identity.first_name
            assert profile["traits"]["email"] == person.identity.email
            assert profile["stats"].get("orders", 0) == orders[person.user_id]
            assert profile["stats"].get("revenue", 0) == pytest.approx(revenue[person.user_id])


async def test_the_first_start_loader_loads_the_demo_once(
    building_server: LiveServer,
    mongodb_uri: str,
    database_name: str,
    db: AsyncDatabase[Document],
) -> None:
    settings = make_settings(mongodb_uri, database_name, port=building_server.port)
    expected = len(generate(seed=1, people=8, days=30, now=NOW).calls)

    for _start in range(2):  # a first start, then a restart
        loader = FirstStartLoader(settings, people=8, days=30)
        loader.start()
        await asyncio.to_thread(loader.thread.join, 30)
        assert not loader.thread.is_alive()

    assert [s.name for s in await SourceStore(db).list()] == [DEMO_SOURCE]
    assert await db["events"].count_documents({}) == expected
    assert await EventLog(db).pending_count() == 0
    assert await db["profiles"].count_documents({}) > 0


async def test_kindred_demo_says_when_no_server_answers(cli_env: dict[str, str]) -> None:
    result = await run_kindred(cli_env, "demo", "--people", "5", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "no ready Kindred answers at http://127.0.0.1:9" in result.stderr


async def test_kindred_demo_stops_on_a_refused_write_key(
    live_server: LiveServer, cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    result = await run_kindred(
        cli_env, "demo", "--people", "5", "--url", live_server.url, "--write-key", "kwk_" + "0" * 43
    )
    assert result.returncode == 1
    assert "refused" in result.stderr
    assert await db["events"].count_documents({}) == 0


async def test_the_builder_suggests_the_demo_typo_duplicates_as_events_arrive(
    building_server: LiveServer, db: AsyncDatabase[Document]
) -> None:
    _, write_key = await SourceStore(db).create(DEMO_SOURCE)
    # A seed whose third duplicate orders, giving the address it shares, within 30 days,
    # and whose original does not move away (the matcher compares current traits).
    demo = generate(seed=21, people=100, days=30, now=datetime.now(UTC))
    assert {d.kind for d in demo.duplicates} == set(DuplicateKind)
    await asyncio.to_thread(
        send, demo.calls, url=building_server.url, write_key=write_key, batch_size=500
    )
    await wait_until_applied(db, len(demo.calls), seconds=90)

    owner = {
        doc["_id"]: doc["profile_id"] async for doc in db["identities"].find({"kind": "user_id"})
    }
    suggested = {
        frozenset(doc["profiles"]) async for doc in db["merge_suggestions"].find({"status": "open"})
    }
    for pair in demo.duplicates:
        profiles = {owner[f"user_id:{p.user_id}"] for p in (pair.original, pair.duplicate)}
        assert profiles in suggested, pair.kind
        # A second account has a user id of its own: suggested, never merged.
        live = {"_id": {"$in": list(profiles)}, "merged_into": None}
        assert await db["profiles"].count_documents(live) == 2
