"""The webhook store: the only module of `profiles.webhooks` that talks to MongoDB.

`webhook_subscriptions` holds who wants what (with the signing secret, which
never leaves this module except to sign). `webhook_outbox` holds one row per
(subscription, transition): the source of truth for what is still to be sent,
so nothing is lost when a process stops.
"""

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from profiles.segments.models import Change, Transition
from profiles.webhooks.models import (
    Attempted,
    Delivery,
    DeliveryStatus,
    Subscription,
    delivery_id,
    to_millis,
)

SUBSCRIPTIONS = "webhook_subscriptions"
OUTBOX = "webhook_outbox"
DUPLICATE_KEY = 11000
# The first probe for due rows covers this much `next_attempt_at`; each empty one
# doubles it. The floor it starts from is looked up afresh this often.
FIRST_PROBE = timedelta(seconds=1)
FLOOR_RECHECK_S = 30.0

PENDING = DeliveryStatus.PENDING.value
DEAD = DeliveryStatus.DEAD.value

Document = dict[str, Any]

INDEXES = {
    SUBSCRIPTIONS: [
        IndexModel([("segment_id", ASCENDING)], name="segment"),
        IndexModel([("active", ASCENDING)], name="active"),
    ],
    OUTBOX: [
        # Due rows: pending, oldest `next_attempt_at` first. A lease moves it forward.
        IndexModel([("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="due"),
        # Admin listings, newest first; `seq` copies the time-sortable `_id`.
        IndexModel([("status", ASCENDING), ("seq", DESCENDING)], name="status_seq"),
        IndexModel([("seq", DESCENDING)], name="seq"),
        IndexModel([("subscription_id", ASCENDING), ("status", ASCENDING)], name="subscription"),
        # Finished rows carry `expire_at`; MongoDB removes them then. Pending rows never expire.
        IndexModel([("expire_at", ASCENDING)], name="expire_at", expireAfterSeconds=0),
    ],
}

# Every subscription field but the secret.
_PUBLIC = {"secret": 0}


def _subscription(doc: Mapping[str, Any]) -> Subscription:
    return Subscription(
        id=doc["_id"],
        segment_id=doc["segment_id"],
        url=doc["url"],
        changes=frozenset(Change(c) for c in doc["changes"]),
        active=doc["active"],
        created_at=doc["created_at"],
        paused_at=doc.get("paused_at"),
        paused_reason=doc.get("paused_reason"),
    )


def _delivery(doc: Mapping[str, Any]) -> Delivery:
    return Delivery(
        id=doc["_id"],
        subscription_id=doc["subscription_id"],
        segment_id=doc["segment_id"],
        segment_version=doc["segment_version"],
        profile_id=doc["profile_id"],
        change=Change(doc["change"]),
        at=doc["at"],
        cause=doc.get("cause") or {},
        status=DeliveryStatus(doc["status"]),
        attempts=doc["attempts"],
        created_at=doc["created_at"],
        next_attempt_at=doc.get("next_attempt_at"),
        last_attempt_at=doc.get("last_attempt_at"),
        last_status=doc.get("last_status"),
        last_error=doc.get("last_error"),
        delivered_at=doc.get("delivered_at"),
    )


def _outbox_row(subscription_id: str, transition: Transition, now: datetime) -> Document:
    did = delivery_id(subscription_id, transition)
    return {
        "_id": did,
        "seq": did,
        "subscription_id": subscription_id,
        "segment_id": transition.segment_id,
        "segment_version": transition.segment_version,
        "profile_id": transition.profile_id,
        "change": transition.change.value,
        "at": to_millis(transition.at),
        "cause": dict(transition.cause),
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _only_duplicates(error: BulkWriteError) -> bool:
    details = error.details
    return not details.get("writeConcernErrors") and all(
        e.get("code") == DUPLICATE_KEY for e in details.get("writeErrors", [])
    )


class WebhookStore:
    """Subscriptions and the outbox of deliveries."""

    def __init__(
        self, db: AsyncDatabase[Document], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.subscriptions = db[SUBSCRIPTIONS]
        self.outbox = db[OUTBOX]
        # Where the next search for due rows starts (see `due_ids`).
        self._clock = clock
        self._floor: datetime | None = None
        self._floor_expires = 0.0

    # Subscriptions.

    async def add_subscription(self, subscription: Subscription, *, secret: str) -> None:
        """Stores a new subscription with its signing secret."""
        await self.subscriptions.insert_one(
            {
                "_id": subscription.id,
                "segment_id": subscription.segment_id,
                "url": subscription.url,
                "changes": sorted(c.value for c in subscription.changes),
                "active": subscription.active,
                "created_at": to_millis(subscription.created_at),
                "secret": secret,
            }
        )

    async def subscription(self, subscription_id: str) -> Subscription | None:
        """Returns a subscription by id."""
        doc = await self.subscriptions.find_one({"_id": subscription_id}, _PUBLIC)
        return None if doc is None else _subscription(doc)

    async def list_subscriptions(
        self, *, segment_id: str | None = None, active_only: bool = False
    ) -> list[Subscription]:
        """Returns subscriptions, oldest first: of one segment, or all; active ones, or all."""
        query: Document = {}
        if segment_id is not None:
            query["segment_id"] = segment_id
        if active_only:
            query["active"] = True
        cursor = self.subscriptions.find(query, _PUBLIC).sort("_id", ASCENDING)
        return [_subscription(doc) async for doc in cursor]

    async def signing_targets(self, ids: Iterable[str]) -> dict[str, tuple[Subscription, str]]:
        """Returns the subscriptions with these ids, each with its secret, to send with."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        cursor = self.subscriptions.find({"_id": {"$in": wanted}})
        return {doc["_id"]: (_subscription(doc), doc["secret"]) async for doc in cursor}

    async def remove_subscription(
        self, subscription_id: str, *, now: datetime, expire_at: datetime
    ) -> bool:
        """Deletes a subscription and cancels its pending rows; tells whether it existed."""
        result = await self.subscriptions.delete_one({"_id": subscription_id})
        if not result.deleted_count:
            return False
        # A row some worker is sending right now keeps its lease: that worker's
        # result (conditional on the lease) replaces this one, and is the truth.
        await self.outbox.update_many(
            {"subscription_id": subscription_id, "status": PENDING},
            {
                "$set": {
                    "status": DeliveryStatus.CANCELLED.value,
                    "last_error": "subscription deleted",
                    "cancelled_at": to_millis(now),
                    "expire_at": to_millis(expire_at),
                },
                "$unset": {"next_attempt_at": ""},
            },
        )
        return True

    async def set_active(
        self, subscription_id: str, *, active: bool, reason: str | None, now: datetime
    ) -> Subscription | None:
        """Pauses or resumes a subscription; returns it as it is now, None if there is none."""
        if active:
            update: Document = {
                "$set": {"active": True},
                "$unset": {"paused_at": "", "paused_reason": ""},
            }
            query: Document = {"_id": subscription_id}
        else:
            update = {
                "$set": {"active": False, "paused_at": to_millis(now), "paused_reason": reason}
            }
            # Pausing a paused subscription keeps the first reason and time.
            query = {"_id": subscription_id, "active": True}
        await self.subscriptions.update_one(query, update)
        return await self.subscription(subscription_id)

    # The outbox.

    async def add_deliveries(
        self,
        pairs: Sequence[tuple[str, Transition]],
        *,
        now: datetime,
        session: AsyncClientSession | None = None,
    ) -> int:
        """Adds one pending row per (subscription id, transition); returns how many are new.

        Rows have deterministic ids. Outside a transaction a row already there
        is skipped, so a retried call adds nothing twice; inside one, a
        duplicate fails the caller's transaction like any other write error.
        """
        if not pairs:
            return 0
        at = to_millis(now)
        rows = [_outbox_row(sid, transition, at) for sid, transition in pairs]
        try:
            result = await self.outbox.insert_many(rows, ordered=False, session=session)
        except BulkWriteError as exc:
            if session is not None or not _only_duplicates(exc):
                raise
            return int(exc.details.get("nInserted", 0))
        return len(result.inserted_ids)

    async def due_ids(self, *, now: datetime, limit: int) -> list[str]:
        """Returns the ids of up to `limit` rows due by `now`, about the longest waiting first.

        SecantusDB reads every match of a query before its limit, so rather than
        asking for all due rows this probes bounded windows of `next_attempt_at`
        forward from a remembered floor: the oldest due time, looked up afresh
        every 30 s or when nothing is found above it. A row that comes in below
        the floor (an expired lease, a redelivery) waits at most that long.
        MongoDB would serve either form from the `due` index.
        """
        now = to_millis(now)
        refreshed = False
        if self._floor is None or self._floor > now or self._clock() > self._floor_expires:
            await self._refresh_floor(now)
            refreshed = True
        found = await self._probe(now, limit)
        if found or refreshed:
            return found
        # Nothing from the floor on: look again from the oldest due row, which
        # may have come in below the floor since.
        await self._refresh_floor(now)
        return await self._probe(now, limit)

    async def _refresh_floor(self, now: datetime) -> None:
        self._floor = await self._oldest_due(now)
        self._floor_expires = self._clock() + FLOOR_RECHECK_S

    async def _probe(self, now: datetime, limit: int) -> list[str]:
        # Windows double in width, so a sparse backlog takes few queries and a
        # dense one is read about `limit` rows at a time.
        found: list[str] = []
        start, step = self._floor, FIRST_PROBE
        while start is not None and start <= now and len(found) < limit:
            end = min(start + step, now + timedelta(milliseconds=1))
            cursor = (
                self.outbox.find(
                    {"status": PENDING, "next_attempt_at": {"$gte": start, "$lt": end}},
                    {"next_attempt_at": 1},
                )
                .sort("next_attempt_at", ASCENDING)
                .limit(limit - len(found))
            )
            window = [doc async for doc in cursor]
            if window and not found:
                self._floor = window[0]["next_attempt_at"]
            found += [doc["_id"] for doc in window]
            start, step = end, step * 2
        if not found:
            self._floor = None
        return found

    async def _oldest_due(self, now: datetime) -> datetime | None:
        doc = await self.outbox.find_one(
            {"status": PENDING, "next_attempt_at": {"$lte": now}},
            {"next_attempt_at": 1},
            sort=[("next_attempt_at", ASCENDING)],
        )
        return None if doc is None else doc["next_attempt_at"]

    async def lease(
        self, ids: Sequence[str], *, now: datetime, until: datetime, owner: str
    ) -> list[Delivery]:
        """Leases those of the rows that are still due to `owner` until `until`; returns them.

        A lease is the row's `next_attempt_at` moved to `until` plus its owner:
        another worker no longer sees it due, and if this one dies the row is
        due again when the lease ends. `owner` must be new for each call.
        """
        if not ids:
            return []
        await self.outbox.update_many(
            {
                "_id": {"$in": list(ids)},
                "status": PENDING,
                "next_attempt_at": {"$lte": to_millis(now)},
            },
            {"$set": {"next_attempt_at": to_millis(until), "lease_owner": owner}},
        )
        cursor = self.outbox.find({"_id": {"$in": list(ids)}})
        leased = [doc async for doc in cursor if doc.get("lease_owner") == owner]
        return [_delivery(doc) for doc in sorted(leased, key=lambda d: d["next_attempt_at"])]

    async def record(self, attempts: Sequence[Attempted], *, owner: str) -> int:
        """Records how leased rows went and ends their leases; returns how many were recorded.

        Each write is conditional on the lease: a row whose lease ended and was
        taken by another worker keeps that worker's result.
        """
        requests = [
            UpdateOne({"_id": a.delivery_id, "lease_owner": owner}, _outcome(a)) for a in attempts
        ]
        if not requests:
            return 0
        result = await self.outbox.bulk_write(requests, ordered=False)
        return result.matched_count

    async def redeliver(self, delivery_id: str, *, now: datetime) -> Delivery | None:
        """Makes a dead row pending again, due now, with a fresh count of attempts.

        Returns None if the row is not dead (or not there).
        """
        doc = await self.outbox.find_one_and_update(
            {"_id": delivery_id, "status": DEAD},
            {
                "$set": {"status": PENDING, "attempts": 0, "next_attempt_at": to_millis(now)},
                "$unset": {"dead_at": "", "lease_owner": "", "expire_at": ""},
            },
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else _delivery(doc)

    async def delivery(self, delivery_id: str) -> Delivery | None:
        """Returns an outbox row by id."""
        doc = await self.outbox.find_one({"_id": delivery_id})
        return None if doc is None else _delivery(doc)

    async def deliveries(
        self, *, status: DeliveryStatus | None, first: int, after: str | None
    ) -> tuple[list[Delivery], bool]:
        """Returns rows newest first (by transition time) after a cursor; and if more follow."""
        query: Document = {}
        if status is not None:
            query["status"] = status.value
        if after is not None:
            query["seq"] = {"$lt": after}
        cursor = self.outbox.find(query).sort("seq", DESCENDING).limit(first + 1)
        docs = [doc async for doc in cursor]
        return [_delivery(doc) for doc in docs[:first]], len(docs) > first


def _outcome(attempt: Attempted) -> Document:
    at = to_millis(attempt.at)
    set_: Document = {"status": attempt.status.value, "last_error": attempt.last_error}
    unset: Document = {"lease_owner": ""}
    update: Document = {"$set": set_, "$unset": unset}
    if attempt.sent:
        set_["last_attempt_at"] = at
        set_["last_status"] = attempt.last_status
        update["$inc"] = {"attempts": 1}
    if attempt.status is DeliveryStatus.PENDING:
        assert attempt.next_attempt_at is not None
        set_["next_attempt_at"] = to_millis(attempt.next_attempt_at)
    else:
        unset["next_attempt_at"] = ""
    if attempt.expire_at is not None:
        set_["expire_at"] = to_millis(attempt.expire_at)
    if attempt.status is DeliveryStatus.DELIVERED:
        set_["delivered_at"] = at
    elif attempt.status is DeliveryStatus.DEAD:
        set_["dead_at"] = at
    elif attempt.status is DeliveryStatus.CANCELLED:
        set_["cancelled_at"] = at
    return update
