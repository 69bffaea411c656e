"""From an event to a receiver: the segment service writes outbox rows with its changes."""

import json
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.eventlog import EVENTS
from app.mongo import ensure_indexes
from profiles.segments.service import SegmentService
from profiles.segments.store import SegmentStore
from profiles.service import utcnow
from profiles.webhooks import signing
from profiles.webhooks import store as webhook_store
from profiles.webhooks.service import WebhookService
from tests.fixtures.events import T0, builder_for, drain, event
from tests.profiles.webhooks.helpers import Receiver

PRO = {"version": 1, "rule": {"type": "trait", "key": "plan", "op": "eq", "value": "pro"}}


async def test_an_event_that_enters_a_segment_reaches_the_receiver_signed(
    db: AsyncDatabase[dict[str, Any]], service: WebhookService, receiver: Receiver
) -> None:
    await ensure_indexes(db, [webhook_store.INDEXES])
    segments = SegmentService(db.client, SegmentStore(db), sink=service)
    pro = await segments.create(name="Pro plan", definition=PRO, actor="test", now=utcnow())
    url = receiver.hook()
    _, secret = await service.subscribe(pro.id, url)
    builder = builder_for(db, segments=segments)
    hours = (utcnow() - T0).total_seconds() / 3600
    joined = event("identify", user_id="u1", traits={"plan": "pro"}, at=hours - 0.1)
    await db[EVENTS].insert_one(joined)
    await drain(builder)
    left = event("identify", user_id="u1", traits={"plan": "free"}, at=hours)
    await db[EVENTS].insert_one(left)
    await drain(builder)

    report = await service.deliver_due(now=utcnow())

    assert report.delivered == 2
    bodies = []
    for request in receiver.received(url):
        signing.verify(secret, body=request.body, header=request.headers["kindred-signature"])
        bodies.append(json.loads(request.body))
    got = sorted((b["type"], b["segment"]["id"], b["cause"].get("event_id")) for b in bodies)
    assert got == [
        ("segment.entered", pro.id, joined["_id"]),
        ("segment.exited", pro.id, left["_id"]),
    ]
