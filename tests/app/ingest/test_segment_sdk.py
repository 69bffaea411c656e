"""The real Segment Python SDK, pointed at a live Kindred, delivers every call type."""

import asyncio

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from segment.analytics.client import Client
from segment.analytics.request import APIError

from app.mongo import Document
from tests.app.ingest.conftest import SOURCE, all_docs
from tests.conftest import LiveServer


def send_everything(client: Client) -> None:
    client.identify("u1", {"email": "ada@example.com", "plan": "pro"}, message_id="sdk-identify")
    client.track("u1", "Order Completed", {"total": 42}, message_id="sdk-track")
    client.page("u1", "Docs", "Pricing", {"path": "/pricing"}, message_id="sdk-page")
    client.screen("u1", "App", "Cart", message_id="sdk-screen")
    client.group("u1", "acme", {"industry": "retail"}, message_id="sdk-group")
    client.alias("anon-7", "u1", message_id="sdk-alias")
    client.track(anonymous_id="anon-7", event="Viewed", message_id="sdk-anon")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
async def test_the_segment_sdk_delivers_every_call_type(
    live_server: LiveServer, db: AsyncDatabase[Document], write_key: str, compress: bool
) -> None:
    client = Client(write_key, host=live_server.url, sync_mode=True, gzip=compress)
    await asyncio.to_thread(send_everything, client)
    stored = {e["message_id"]: e for e in await all_docs(db, "events")}
    assert set(stored) == {
        "sdk-identify",
        "sdk-track",
        "sdk-page",
        "sdk-screen",
        "sdk-group",
        "sdk-alias",
        "sdk-anon",
    }
    assert all(e["source"] == SOURCE for e in stored.values())
    assert stored["sdk-identify"]["traits"] == {"email": "ada@example.com", "plan": "pro"}
    assert stored["sdk-track"]["event"] == "Order Completed"
    assert stored["sdk-page"]["name"] == "Pricing"
    assert stored["sdk-group"]["group_id"] == "acme"
    assert stored["sdk-alias"]["previous_id"] == "anon-7"
    assert stored["sdk-anon"]["user_id"] is None
    assert stored["sdk-track"]["context"]["library"]["name"] == "analytics-python"
    assert stored["sdk-track"]["sent_at"] is not None


async def test_the_segment_sdk_reads_an_unknown_key_as_an_api_error(
    live_server: LiveServer, db: AsyncDatabase[Document]
) -> None:
    client = Client("kwk_" + "0" * 43, host=live_server.url, sync_mode=True)
    with pytest.raises(APIError) as raised:
        await asyncio.to_thread(client.track, "u1", "Viewed")
    assert raised.value.status == 401
    assert raised.value.code == "unauthorized"
    assert "write key" in raised.value.message
