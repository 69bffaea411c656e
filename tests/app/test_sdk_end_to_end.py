"""Real SDKs send to a live Kindred whose in-process builder turns their events into profiles."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from app.auth import KeyStore, Scope
from app.ingest.store import SourceStore
from app.mongo import Document
from tests.conftest import LiveServer, make_settings

PROFILE = """
query($userId: String!) {
  profile(identity: {kind: "user_id", value: $userId}) {
    __typename
    ... on Profile { traits(keys: ["first_name", "email"]) stats }
  }
}"""

# identify, track, page (anonymous, before the alias) and alias.
EVENTS_SENT = 4
WAIT_SECONDS = 15


@dataclass(frozen=True)
class BuildingServer:
    """A live server that runs the profile builder, and its database's name."""

    server: LiveServer
    database: str


@pytest.fixture(scope="module")
def building_server(mongodb_uri: str) -> Iterator[BuildingServer]:
    """One live server for the module, with the in-process profile builder on."""
    database = f"kindred_test_{uuid.uuid4().hex[:12]}"
    server = LiveServer(make_settings(mongodb_uri, database, worker_in_process=True))
    server.start()
    try:
        yield BuildingServer(server, database)
    finally:
        server.stop()
        client: MongoClient[Document]
        with MongoClient(mongodb_uri) as client:
            client.drop_database(database)


@pytest.fixture
async def server_db(
    mongodb_uri: str, building_server: BuildingServer
) -> AsyncIterator[AsyncDatabase[Document]]:
    """The building server's database, for creating sources and keys."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    try:
        yield client[building_server.database]
    finally:
        await client.close()


@pytest.fixture
async def admin_client(
    building_server: BuildingServer, server_db: AsyncDatabase[Document]
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the live server that authenticates as an admin."""
    _, secret = await KeyStore(server_db).create(name="e2e-admin", scopes=[Scope.ADMIN])
    headers = {"authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=building_server.server.url, headers=headers) as c:
        yield c


async def built_profile(client: httpx.AsyncClient, user_id: str) -> dict[str, Any]:
    """Polls GraphQL until the builder has applied every event sent; returns the profile."""
    deadline = time.monotonic() + WAIT_SECONDS
    profile: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.post(
            "/graphql", json={"query": PROFILE, "variables": {"userId": user_id}}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        profile = body["data"]["profile"]
        if profile.get("stats", {}).get("event_count") == EVENTS_SENT:
            return profile
        await asyncio.sleep(0.1)
    raise AssertionError(f"the builder did not apply {EVENTS_SENT} events in time: {profile}")


def send_journey(
    identify: Callable[..., Any],
    track: Callable[..., Any],
    page: Callable[..., Any],
    alias: Callable[..., Any],
    *,
    user_id: str,
    anonymous_id: str,
) -> None:
    """Sends a visitor's journey: an anonymous page view, sign-up, an order, then the alias."""
    page(anonymous_id=anonymous_id, name="Pricing", properties={"path": "/pricing"})
    identify(user_id, {"email": f"{user_id}@example.com", "first_name": "Ada"})
    track(user_id, "Order Completed", {"revenue": 42.5, "currency": "EUR"})
    alias(anonymous_id, user_id)


def assert_built(profile: dict[str, Any], user_id: str) -> None:
    """Checks the profile holds the journey's traits and activity."""
    assert profile["__typename"] == "Profile"
    assert profile["traits"] == {"first_name": "Ada", "email": f"{user_id}@example.com"}
    stats = profile["stats"]
    # The anonymous page view counts too: the alias merged its profile into the user's.
    assert stats["event_count"] == EVENTS_SENT
    assert stats["page_views"] == 1
    assert stats["orders"] == 1
    assert stats["revenue"] == 42.5
    assert stats["event_counts"] == {"Order Completed": 1}


async def test_segment_sdk_events_become_a_profile(
    building_server: BuildingServer,
    server_db: AsyncDatabase[Document],
    admin_client: httpx.AsyncClient,
) -> None:
    _, write_key = await SourceStore(server_db).create("segment")
    sdk = SegmentClient(write_key, host=building_server.server.url, sync_mode=True)
    await asyncio.to_thread(
        send_journey,
        sdk.identify,
        sdk.track,
        sdk.page,
        sdk.alias,
        user_id="seg-u1",
        anonymous_id="seg-anon-1",
    )
    assert_built(await built_profile(admin_client, "seg-u1"), "seg-u1")


async def test_rudder_sdk_gzipped_events_become_a_profile(
    building_server: BuildingServer,
    server_db: AsyncDatabase[Document],
    admin_client: httpx.AsyncClient,
) -> None:
    _, write_key = await SourceStore(server_db).create("rudder")
    sdk = RudderClient(write_key, host=building_server.server.url, sync_mode=True)
    assert sdk.gzip is True  # the default, so the bodies arrive compressed
    await asyncio.to_thread(
        send_journey,
        sdk.identify,
        sdk.track,
        sdk.page,
        sdk.alias,
        user_id="rud-u1",
        anonymous_id="rud-anon-1",
    )
    assert_built(await built_profile(admin_client, "rud-u1"), "rud-u1")
