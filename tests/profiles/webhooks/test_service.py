"""Webhook delivery end to end: the real database, a real HTTP receiver, an injected clock."""

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from app.mongo import Document
from profiles.segments.models import Change
from profiles.webhooks import signing
from profiles.webhooks.errors import InvalidWebhook, RedeliveryRefused
from profiles.webhooks.models import DeliveryReport, DeliveryStatus
from profiles.webhooks.service import WebhookService
from profiles.webhooks.store import OUTBOX, SUBSCRIPTIONS
from tests.profiles.webhooks.helpers import SLOW, Receiver, make_service, transition, utcnow


async def _rows(db: AsyncDatabase[Document], **query: Any) -> list[dict[str, Any]]:
    return [doc async for doc in db[OUTBOX].find(query)]


async def test_a_change_is_delivered_once_signed_with_the_subscription_secret(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    url = receiver.hook()
    subscription, secret = await service.subscribe("vip", url)
    now = utcnow()
    change = transition(cause={"kind": "event", "event_id": "evt_42", "seen": now})

    assert await service.enqueue([change], now=now) == 1
    report = await service.deliver_due(now=now)
    again = await service.deliver_due(now=now + timedelta(hours=2))

    assert (report.leased, report.delivered) == (1, 1)
    assert again.leased == 0
    [request] = receiver.received(url)
    signing.verify(secret, body=request.body, header=request.headers["kindred-signature"])
    body = json.loads(request.body)
    [row] = await _rows(db)
    assert body == {
        "id": row["_id"],
        "type": "segment.entered",
        "segment": {"id": "vip", "version": 3},
        "profile_id": "prf_01TEST",
        "at": change.at.isoformat().replace("+00:00", "Z"),
        "cause": {"kind": "event", "event_id": "evt_42", "seen": body["at"]},
    }
    assert request.headers["kindred-webhook-id"] == row["_id"]
    assert request.headers["content-type"] == "application/json"
    assert row["status"] == "delivered"
    assert row["attempts"] == 1
    assert row["subscription_id"] == subscription.id
    assert "lease_owner" not in row
    # Kept a week for the admin to see, then MongoDB's TTL index removes it.
    assert row["expire_at"] == now + timedelta(days=7)


async def test_a_signature_made_with_another_secret_does_not_verify(
    service: WebhookService, receiver: Receiver
) -> None:
    url = receiver.hook()
    await service.subscribe("vip", url)
    _, other_secret = await service.subscribe("other", receiver.hook())
    now = utcnow()
    await service.enqueue([transition()], now=now)
    await service.deliver_due(now=now)

    [request] = receiver.received(url)
    with pytest.raises(signing.InvalidSignature):
        signing.verify(other_secret, body=request.body, header=request.headers["kindred-signature"])


async def test_failures_back_off_then_go_dead_and_redeliver_sends_again(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    # Three attempts allowed (TEST_CONFIG); no jitter: waits of exactly 10 s, then 20 s.
    url = receiver.hook(500, 503, 500)
    await service.subscribe("vip", url)
    t0 = utcnow()
    await service.enqueue([transition()], now=t0)

    first = await service.deliver_due(now=t0)
    [row] = await _rows(db)
    assert first.retried == 1
    assert (row["status"], row["attempts"], row["last_status"]) == ("pending", 1, 500)
    assert row["next_attempt_at"] == t0 + timedelta(seconds=10)
    assert "HTTP 500: answered 500" in row["last_error"]

    assert (await service.deliver_due(now=t0 + timedelta(seconds=9))).leased == 0
    second = await service.deliver_due(now=t0 + timedelta(seconds=10))
    [row] = await _rows(db)
    assert second.retried == 1
    assert row["next_attempt_at"] == t0 + timedelta(seconds=30)

    third = await service.deliver_due(now=t0 + timedelta(seconds=30))
    [row] = await _rows(db)
    assert third.dead == 1
    assert (row["status"], row["attempts"], row["last_status"]) == ("dead", 3, 500)
    assert "next_attempt_at" not in row
    assert row["expire_at"] == t0 + timedelta(seconds=30, days=30)
    assert (await service.deliver_due(now=t0 + timedelta(days=1))).leased == 0
    assert len(receiver.received(url)) == 3

    again = await service.redeliver(row["_id"], now=t0 + timedelta(minutes=5))
    assert (again.status, again.attempts) == (DeliveryStatus.PENDING, 0)
    assert "expire_at" not in (await _rows(db))[0]
    fourth = await service.deliver_due(now=t0 + timedelta(minutes=5))
    [row] = await _rows(db)
    assert fourth.delivered == 1
    assert row["status"] == "delivered"
    requests = receiver.received(url)
    assert len(requests) == 4
    assert {r.headers["kindred-webhook-id"] for r in requests} == {row["_id"]}


async def test_a_receiver_that_does_not_answer_in_time_counts_as_a_failure(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    await service.subscribe("vip", receiver.hook(SLOW))
    now = utcnow()
    await service.enqueue([transition()], now=now)

    report = await service.deliver_due(now=now)

    [row] = await _rows(db)
    assert report.retried == 1
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"] == "no answer within 0.5 s"
    assert row.get("last_status") is None


async def test_an_unreachable_receiver_counts_as_a_failure(
    service: WebhookService, db: AsyncDatabase[Document]
) -> None:
    from app.embedded import free_port

    await service.subscribe("vip", f"http://127.0.0.1:{free_port()}/nobody")
    now = utcnow()
    await service.enqueue([transition()], now=now)

    report = await service.deliver_due(now=now)

    [row] = await _rows(db)
    assert report.retried == 1
    assert row["last_error"].startswith("ConnectError")


async def test_redelivering_a_row_that_is_not_dead_is_refused(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    await service.subscribe("vip", receiver.hook())
    now = utcnow()
    await service.enqueue([transition()], now=now)
    [row] = await _rows(db)

    with pytest.raises(RedeliveryRefused, match="pending"):
        await service.redeliver(row["_id"])


async def test_410_pauses_the_subscription_until_resumed(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    url = receiver.hook(410)
    subscription, _ = await service.subscribe("vip", url)
    now = utcnow()
    await service.enqueue([transition(profile_id="prf_A")], now=now)

    report = await service.deliver_due(now=now)

    assert report.paused == (subscription.id,)
    [paused] = await service.subscriptions("vip")
    assert not paused.active
    assert paused.paused_reason == "the receiver answered 410 Gone"
    [row] = await _rows(db)
    assert (row["status"], row["last_status"]) == ("dead", 410)
    # A paused subscription gets no new rows, and its dead ones wait for a resume.
    assert await service.enqueue([transition(profile_id="prf_B")], now=now) == 0
    with pytest.raises(RedeliveryRefused, match="paused"):
        await service.redeliver(row["_id"])

    await service.resume(subscription.id)
    await service.redeliver(row["_id"], now=now)
    assert (await service.deliver_due(now=now)).delivered == 1
    assert len(receiver.received(url)) == 2


async def test_rows_of_a_subscription_paused_meanwhile_are_not_sent(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    url = receiver.hook(410)
    await service.subscribe("vip", url)
    now = utcnow()
    await service.enqueue([transition(profile_id="prf_A")], now=now)
    await service.deliver_due(now=now)
    # Another process, whose cache still holds the subscription as active, enqueues.
    other = make_service(db)
    try:
        await other.store.add_deliveries(
            [((await service.subscriptions())[0].id, transition(profile_id="prf_B"))], now=now
        )
    finally:
        await other.aclose()

    report = await service.deliver_due(now=now)

    assert (report.leased, report.dead) == (1, 1)
    assert len(receiver.received(url)) == 1
    [row] = await _rows(db, profile_id="prf_B")
    assert row["status"] == "dead"
    assert "subscription paused" in row["last_error"]
    assert row["attempts"] == 0


async def test_the_outbox_survives_a_restart(
    mongodb_uri: str, database_name: str, db: AsyncDatabase[Document], receiver: Receiver
) -> None:
    url = receiver.hook()
    now = utcnow()
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    before = make_service(client[database_name])
    await before.subscribe("vip", url)
    await before.enqueue([transition()], now=now)
    await before.aclose()
    await client.close()

    # A new process: new database client, new service, nothing carried over but the database.
    client = AsyncMongoClient(mongodb_uri, tz_aware=True)
    after = make_service(client[database_name])
    try:
        report = await after.deliver_due(now=now)
    finally:
        await after.aclose()
        await client.close()

    assert report.delivered == 1
    assert len(receiver.received(url)) == 1


async def test_a_row_leased_by_a_killed_worker_is_sent_once_its_lease_ends(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    # The first request hangs; the worker sending it is killed mid-request.
    url = receiver.hook(SLOW)
    await service.subscribe("vip", url)
    now = utcnow()
    await service.enqueue([transition()], now=now)
    killed = make_service(db)
    sending = asyncio.create_task(killed.deliver_due(now=now))
    await receiver.wait_for(url)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    await killed.aclose()

    during_lease = await service.deliver_due(now=now + timedelta(seconds=5))
    after_lease = await service.deliver_due(now=now + timedelta(minutes=5))

    assert during_lease.leased == 0
    assert after_lease.delivered == 1
    [row] = await _rows(db)
    assert (row["status"], row["attempts"]) == ("delivered", 1)
    # At least once: the receiver saw it twice, under one id to dedupe on.
    requests = receiver.received(url)
    assert len(requests) == 2
    assert {r.headers["kindred-webhook-id"] for r in requests} == {row["_id"]}


async def test_two_workers_at_once_send_each_row_once(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    url = receiver.hook()
    await service.subscribe("vip", url)
    now = utcnow()
    changes = [transition(profile_id=f"prf_{n:03d}") for n in range(40)]
    await service.enqueue(changes, now=now)
    second = make_service(db)
    reports: list[DeliveryReport] = []
    try:
        # Rounds of three passes at once, competing for the same due rows, until none is left.
        while not reports or any(r.leased for r in reports[-3:]):
            reports += await asyncio.gather(
                *(worker.deliver_due(now=now, limit=15) for worker in (service, second, service))
            )
    finally:
        await second.aclose()

    assert sum(r.delivered for r in reports) == 40
    ids = [r.headers["kindred-webhook-id"] for r in receiver.received(url)]
    assert len(ids) == len(set(ids)) == 40


async def test_only_subscriptions_for_that_segment_and_change_get_rows(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    both, _ = await service.subscribe("vip", receiver.hook())
    entered, _ = await service.subscribe("vip", receiver.hook(), changes=[Change.ENTERED])
    exited, _ = await service.subscribe("vip", receiver.hook(), changes=[Change.EXITED])
    other, _ = await service.subscribe("churned", receiver.hook())

    added = await service.enqueue(
        [
            transition("vip", Change.ENTERED),
            transition("vip", Change.EXITED),
            transition("lapsed", Change.ENTERED),
        ]
    )

    rows = await _rows(db)
    got = sorted((r["subscription_id"], r["change"]) for r in rows)
    assert added == 4
    assert got == sorted(
        [
            (both.id, "entered"),
            (both.id, "exited"),
            (entered.id, "entered"),
            (exited.id, "exited"),
        ]
    )
    assert other.id not in {r["subscription_id"] for r in rows}


async def test_enqueue_in_a_transaction_that_aborts_writes_nothing(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    await service.subscribe("vip", receiver.hook())

    class Abort(Exception):
        pass

    async def body(session: Any) -> None:
        await db["segment_log"].insert_one({"segment": "vip"}, session=session)
        assert await service.enqueue([transition()], session=session) == 1
        raise Abort

    async with db.client.start_session() as session:
        with pytest.raises(Abort):
            await session.with_transaction(body)

    assert await _rows(db) == []
    assert await db["segment_log"].count_documents({}) == 0


async def test_enqueue_in_a_committed_transaction_commits_with_the_change(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    await service.subscribe("vip", receiver.hook())

    async def body(session: Any) -> int:
        await db["segment_log"].insert_one({"segment": "vip"}, session=session)
        return await service.enqueue([transition()], session=session)

    async with db.client.start_session() as session:
        assert await session.with_transaction(body) == 1

    assert len(await _rows(db)) == 1


async def test_the_same_change_enqueued_twice_is_one_row(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    await service.subscribe("vip", receiver.hook())
    change = transition()

    assert await service.enqueue([change]) == 1
    assert await service.enqueue([change, transition(profile_id="prf_OTHER")]) == 1

    assert len(await _rows(db)) == 2


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "https://user:secret@example.com/hook",
        "https:///no-host",
        "http://exa mple.com/",
        "https://example.com:99999/",
        "https://example.com/hook#part",
        "https://" + "a" * 2050 + ".com/",
        "javascript:alert(1)",
        "",
    ],
)
async def test_a_bad_url_is_refused_naming_the_field(
    service: WebhookService, db: AsyncDatabase[Document], url: str
) -> None:
    with pytest.raises(InvalidWebhook) as refused:
        await service.subscribe("vip", url)

    assert refused.value.field == "url"
    assert await db[SUBSCRIPTIONS].count_documents({}) == 0


async def test_the_secret_is_stored_to_sign_but_never_listed(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    subscription, secret = await service.subscribe("vip", receiver.hook())

    stored = await db[SUBSCRIPTIONS].find_one({"_id": subscription.id})
    [listed] = await service.subscriptions("vip")

    assert secret.startswith("whsec_")
    assert stored is not None
    assert stored["secret"] == secret
    assert secret not in repr(listed)


async def test_deleting_a_subscription_cancels_what_it_had_pending(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    url = receiver.hook()
    subscription, _ = await service.subscribe("vip", url)
    now = utcnow()
    await service.enqueue([transition()], now=now)

    assert await service.unsubscribe(subscription.id)
    assert not await service.unsubscribe(subscription.id)
    report = await service.deliver_due(now=now)

    [row] = await _rows(db)
    assert row["status"] == "cancelled"
    assert report.leased == 0
    assert receiver.received(url) == []
    assert await service.enqueue([transition()]) == 0


class _FindCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.finds = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == SUBSCRIPTIONS:
            self.finds += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_enqueue_reads_the_subscriptions_once_per_cache_period(
    mongodb_uri: str, database_name: str, db: AsyncDatabase[Document]
) -> None:
    counter = _FindCounter()
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        mongodb_uri, tz_aware=True, event_listeners=[counter]
    )
    clock = [100.0]
    webhooks = make_service(client[database_name], clock=lambda: clock[0])
    try:
        for _ in range(5):
            assert await webhooks.enqueue([transition()]) == 0
        clock[0] += 4.9
        await webhooks.enqueue([transition()])
        assert counter.finds == 1
        clock[0] += 0.2
        await webhooks.enqueue([transition()])
        assert counter.finds == 2
    finally:
        await webhooks.aclose()
        await client.close()
    assert await db[OUTBOX].count_documents({}) == 0


async def test_a_subscription_made_elsewhere_is_seen_once_the_cache_expires(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    clock = [0.0]
    builder = make_service(db, clock=lambda: clock[0])
    try:
        assert await builder.enqueue([transition()]) == 0
        await service.subscribe("vip", receiver.hook())  # another instance: another process
        assert await builder.enqueue([transition(profile_id="prf_B")]) == 0
        clock[0] += 5.0
        assert await builder.enqueue([transition(profile_id="prf_C")]) == 1
    finally:
        await builder.aclose()


async def test_deliveries_page_newest_first_and_filter_by_status(
    service: WebhookService, receiver: Receiver
) -> None:
    await service.subscribe("vip", receiver.hook(500))
    now = utcnow()
    await service.enqueue(
        [transition(profile_id=f"prf_{n}", at=now - timedelta(minutes=n)) for n in range(5)],
        now=now,
    )
    await service.deliver_due(now=now, limit=1)  # the oldest-due row fails first

    page, more = await service.deliveries(first=3)
    rest, more_after = await service.deliveries(first=3, after=page[-1].id)
    pending, _ = await service.deliveries(status=DeliveryStatus.PENDING, first=10)

    assert [d.profile_id for d in page + rest] == [f"prf_{n}" for n in range(5)]
    assert (more, more_after) == (True, False)
    assert len(pending) == 5
    assert sum(d.attempts for d in pending) == 1


async def test_a_row_that_cannot_even_be_sent_counts_a_failure_and_does_not_stop_others(
    service: WebhookService, receiver: Receiver, db: AsyncDatabase[Document]
) -> None:
    good = receiver.hook()
    await service.subscribe("vip", good)
    broken, _ = await service.subscribe("vip", receiver.hook())
    # A URL stored before today's rules (or by hand) that no client can use.
    await db[SUBSCRIPTIONS].update_one({"_id": broken.id}, {"$set": {"url": "http://[::1"}})
    now = utcnow()
    await service.enqueue([transition()], now=now)

    report = await service.deliver_due(now=now)

    assert (report.delivered, report.retried) == (1, 1)
    [row] = await _rows(db, subscription_id=broken.id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["last_error"]
    assert len(receiver.received(good)) == 1
