"""The webhook delivery loop: it sends what is due, waits for readiness, and stops when told."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app import webhook_worker
from app.mongo import Document, ensure_indexes
from profiles.webhooks import store as webhook_store
from profiles.webhooks.service import WebhookService
from tests.profiles.webhooks.helpers import Receiver, make_service, transition


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def service(db: AsyncDatabase[Document]) -> AsyncIterator[WebhookService]:
    await ensure_indexes(db, [webhook_store.INDEXES])
    made = make_service(db)
    try:
        yield made
    finally:
        await made.aclose()


async def test_the_loop_delivers_what_is_due_until_stopped(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    url = receiver.hook()
    await service.subscribe("vip", url)
    stop = asyncio.Event()
    loop = asyncio.create_task(webhook_worker.run(service, stop, poll_seconds=0.02, batch_size=2))

    # Five rows, batches of two: the loop goes on without pausing while batches are full.
    await service.enqueue([transition(profile_id=f"prf_{n}") for n in range(5)])
    await receiver.wait_for(url, count=5)
    stop.set()
    await asyncio.wait_for(loop, timeout=5)

    statuses = [doc["status"] async for doc in db[webhook_store.OUTBOX].find()]
    assert statuses == ["delivered"] * 5


async def test_the_loop_waits_for_the_app_to_be_ready(
    service: WebhookService, receiver: Receiver
) -> None:
    url = receiver.hook()
    await service.subscribe("vip", url)
    await service.enqueue([transition()], now=datetime.now(UTC))
    ready, stop = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(
        webhook_worker.run_when_ready(service, ready, stop, poll_seconds=0.02)
    )

    await asyncio.sleep(0.2)
    sent_before_ready = len(receiver.received(url))
    ready.set()
    await receiver.wait_for(url)
    stop.set()
    await asyncio.wait_for(loop, timeout=5)

    assert sent_before_ready == 0


async def test_stopping_before_ready_ends_the_loop(db: AsyncDatabase[Document]) -> None:
    service = make_service(db)
    ready, stop = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(webhook_worker.run_when_ready(service, ready, stop, poll_seconds=1))
    try:
        stop.set()
        await asyncio.wait_for(loop, timeout=2)
    finally:
        await service.aclose()

    assert loop.done()
