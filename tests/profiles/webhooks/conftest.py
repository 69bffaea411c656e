"""Fixtures: a real HTTP receiver, and a webhook service on the test database."""

from collections.abc import AsyncIterator, Iterator

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app.mongo import Document, ensure_indexes
from profiles.webhooks import store as webhook_store
from profiles.webhooks.service import WebhookService
from tests.profiles.webhooks.helpers import Receiver, make_service


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver on a free loopback port."""
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def service(db: AsyncDatabase[Document]) -> AsyncIterator[WebhookService]:
    """A webhook service on the test database, its indexes made."""
    await ensure_indexes(db, [webhook_store.INDEXES])
    made = make_service(db)
    try:
        yield made
    finally:
        await made.aclose()
