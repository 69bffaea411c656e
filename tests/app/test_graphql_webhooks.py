"""Webhooks through the app: admin GraphQL, and the delivery loop the lifespan runs."""

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import Scope
from app.mongo import Document
from app.settings import Settings
from profiles.webhooks import signing
from tests.conftest import AppFactory, http_client, make_settings
from tests.fixtures.graphql import gql, key_headers
from tests.profiles.webhooks.helpers import Receiver, transition

CREATE = """
mutation($url: String!) {
  createWebhook(segmentId: "vip", url: $url) {
    __typename
    ... on WebhookCreated { secret webhook { id active } }
    ... on InvalidInput { field message }
  }
}
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_an_admin_subscribes_and_the_app_delivers_signed_changes(
    app_factory: AppFactory,
    mongodb_uri: str,
    database_name: str,
    db: AsyncDatabase[Document],
    receiver: Receiver,
) -> None:
    settings = make_settings(mongodb_uri, database_name, webhook_poll_seconds=0.05)
    url = receiver.hook()
    async with app_factory(settings) as app, http_client(app) as client:
        headers = await key_headers(db, Scope.ADMIN)
        created = (await gql(client, headers, CREATE, url=url))["data"]["createWebhook"]
        # What the segment service does in the transaction that records a change.
        await app.state.kindred.webhooks.enqueue([transition("vip")])
        await receiver.wait_for(url)

    [request] = receiver.received(url)
    signing.verify(
        created["secret"], body=request.body, header=request.headers["kindred-signature"]
    )
    assert json.loads(request.body)["type"] == "segment.entered"


async def test_webhooks_need_an_admin_key(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], receiver: Receiver
) -> None:
    headers = await key_headers(db, Scope.PROFILES_READ, Scope.PROFILES_WRITE)

    body = await gql(client, headers, CREATE, url=receiver.hook())
    listed = await gql(client, headers, "query { webhooks { id } }")

    assert body["errors"][0]["extensions"]["code"] == "forbidden"
    assert listed["errors"][0]["extensions"]["code"] == "forbidden"


async def test_a_bad_url_is_refused_naming_the_field(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = await gql(client, admin_headers, CREATE, url="http://user:pw@example.com/")

    assert body["data"]["createWebhook"]["__typename"] == "InvalidInput"
    assert body["data"]["createWebhook"]["field"] == "url"


async def test_the_delivery_loop_can_be_left_out_of_serve(
    app_factory: AppFactory,
    mongodb_uri: str,
    database_name: str,
    db: AsyncDatabase[Document],
    receiver: Receiver,
) -> None:
    settings: Settings = make_settings(
        mongodb_uri, database_name, webhooks_in_process=False, webhook_poll_seconds=0.05
    )
    url = receiver.hook()
    app: FastAPI
    async with app_factory(settings) as app:
        webhooks = app.state.kindred.webhooks
        await webhooks.subscribe("vip", url)
        await webhooks.enqueue([transition("vip")])
        await asyncio.sleep(0.3)  # six polls' worth, had the loop been running
        pending, _ = await webhooks.deliveries()

    assert [d.status.value for d in pending] == ["pending"]
    assert receiver.received(url) == []
