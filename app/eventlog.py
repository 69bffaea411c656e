"""The event log as the profile builder sees it: claim pending events, mark them applied.

Ingest (`app/ingest/`) appends to `events`; this module leases, reads and
finishes them. A lease lets several workers run at once without applying an
event twice, and lets an event of a killed worker go to another after expiry.
"""

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateMany
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from app.ingest.models import EventStatus
from profiles.store import given_back_rows, moved_rows

EVENTS = "events"
PENDING = EventStatus.PENDING.value
LEASED = EventStatus.LEASED.value
APPLIED = EventStatus.APPLIED.value

Document = dict[str, Any]

# The first probe for pending events covers this much `received_at`; each empty
# probe doubles it. The floor is looked up afresh this often.
FIRST_PROBE = timedelta(seconds=1)
FLOOR_RECHECK_S = 30.0

# What the builder reads of an event.
BUILDER_FIELDS = {
    "_id": 1,
    "source": 1,
    "type": 1,
    "event": 1,
    "name": 1,
    "user_id": 1,
    "anonymous_id": 1,
    "previous_id": 1,
    "group_id": 1,
    "traits": 1,
    "context.traits": 1,
    "properties": 1,
    "timestamp": 1,
    "received_at": 1,
}


class EventLog:
    """Leases pending events to one worker at a time and records where each was applied."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.events = db[EVENTS]
        # Where this worker's next search for pending events starts.
        self._floor: datetime | None = None
        self._floor_expires = 0.0

    async def claim(
        self, *, owner: str, limit: int, now: datetime, lease: timedelta
    ) -> list[Document]:
        """Leases up to about `limit` pending events, oldest first, and returns them.

        Every query here is an equality on `status` plus a *bounded* range on
        `received_at`, so it stays cheap however long the log and the backlog
        grow: SecantusDB reads every match of an unbounded query before applying
        a limit, and scans the whole collection for an `_id` `$in` with other
        conditions.
        """
        if await self._release_expired(now):
            self._floor = None
        if self._floor is None or time.monotonic() > self._floor_expires:
            # Cheap when little is pending, which is when it runs unprompted; every
            # 30 s it also catches events committed late with an older `received_at`.
            self._floor = await self._oldest_pending()
            self._floor_expires = time.monotonic() + FLOOR_RECHECK_S
        window = await self._pending_window(limit, now)
        if not window:
            self._floor = None
            return []
        self._floor = window[0]
        span = {"$gte": window[0], "$lte": window[-1]}
        # Whatever another worker leased first is no longer pending: each event
        # goes to exactly one of us.
        await self.events.update_many(
            {"status": PENDING, "received_at": span},
            {"$set": {"status": LEASED, "lease_owner": owner, "lease_until": now + lease}},
        )
        return await self._leased(owner, span)

    async def _oldest_pending(self) -> datetime | None:
        doc = await self.events.find_one(
            {"status": PENDING}, {"received_at": 1}, sort=[("received_at", ASCENDING)]
        )
        return None if doc is None else doc["received_at"]

    async def _pending_window(self, limit: int, now: datetime) -> list[datetime]:
        """Returns when the oldest pending events arrived, probing forward from the floor."""
        if self._floor is None:
            return []
        start, step = self._floor, FIRST_PROBE
        while start <= now + FIRST_PROBE:
            found = [
                doc["received_at"]
                async for doc in self.events.find(
                    {"status": PENDING, "received_at": {"$gte": start, "$lt": start + step}},
                    {"received_at": 1},
                )
                .sort("received_at", ASCENDING)
                .limit(limit)
            ]
            if found:
                return found
            start, step = start + step, step * 2
        return []

    async def _release_expired(self, now: datetime) -> bool:
        # A killed worker's events go back to the pool once its lease ends.
        result = await self.events.update_many(
            {"status": LEASED, "lease_until": {"$lt": now}},
            {"$set": {"status": PENDING}, "$unset": {"lease_owner": "", "lease_until": ""}},
        )
        return result.modified_count > 0

    async def _leased(
        self, owner: str, span: Document, session: AsyncClientSession | None = None
    ) -> list[Document]:
        query = {"status": LEASED, "received_at": span, "lease_owner": owner}
        return [doc async for doc in self.events.find(query, BUILDER_FIELDS, session=session)]

    async def still_leased(
        self, events: Sequence[Document], *, owner: str, session: AsyncClientSession
    ) -> list[Document]:
        """Returns those of the events this owner still holds, inside a transaction."""
        if not events:
            return []
        times = [doc["received_at"] for doc in events]
        ids = {doc["_id"] for doc in events}
        span = {"$gte": min(times), "$lte": max(times)}
        return [doc for doc in await self._leased(owner, span, session) if doc["_id"] in ids]

    async def mark_applied(
        self,
        assignment: Mapping[str | None, Sequence[str]],
        *,
        now: datetime,
        session: AsyncClientSession,
    ) -> None:
        """Records, per profile, that its events are applied, and releases their leases.

        Events under `None` had no usable identifier: applied to no profile.
        """
        requests = [
            UpdateMany(
                {"_id": {"$in": list(event_ids)}},
                {
                    "$set": {"status": APPLIED, "profile_id": profile_id, "applied_at": now},
                    "$unset": {"lease_owner": "", "lease_until": ""},
                },
            )
            for profile_id, event_ids in assignment.items()
        ]
        if requests:
            await self.events.bulk_write(requests, ordered=False, session=session)

    async def move(self, from_profile: str, to_profile: str, *, session: AsyncClientSession) -> int:
        """Moves every event of a merged-away profile to its survivor; returns how many."""
        result = await self.events.update_many(
            {"profile_id": from_profile}, moved_rows(to_profile, from_profile), session=session
        )
        return result.modified_count

    async def give_back(self, merged: str, *, holder: str, session: AsyncClientSession) -> int:
        """Gives an unmerged profile back the events it brought to its survivor chain."""
        result = await self.events.update_many(
            {"profile_id": holder, "merged_from": merged}, given_back_rows(merged), session=session
        )
        return result.modified_count

    async def applied_since(
        self, profile_id: str, since: datetime, *, session: AsyncClientSession
    ) -> list[Document]:
        """Returns a profile's events applied at or after an instant."""
        query = {"profile_id": profile_id, "status": APPLIED, "applied_at": {"$gte": since}}
        return [doc async for doc in self.events.find(query, BUILDER_FIELDS, session=session)]

    async def reassign(
        self, event_ids: Sequence[str], *, to_profile: str, session: AsyncClientSession
    ) -> int:
        """Moves the given applied events to another profile."""
        if not event_ids:
            return 0
        result = await self.events.update_many(
            {"_id": {"$in": list(event_ids)}},
            {"$set": {"profile_id": to_profile}},
            session=session,
        )
        return result.modified_count

    async def applied_to(
        self, profile_id: str, *, session: AsyncClientSession | None = None
    ) -> list[Document]:
        """Returns every applied event of a profile (for recomputing its stats)."""
        return [
            doc
            async for doc in self.events.find(
                {"profile_id": profile_id, "status": APPLIED}, BUILDER_FIELDS, session=session
            )
        ]

    async def pending_count(self) -> int:
        """Returns how many events wait to be applied, leased ones included."""
        return await self.events.count_documents({"status": {"$in": [PENDING, LEASED]}})

    async def recent(
        self, profile_id: str, *, first: int, before: tuple[datetime, str] | None, name: str | None
    ) -> list[Document]:
        """Returns a profile's applied events, newest first, after a cursor position."""
        query: Document = {"profile_id": profile_id}
        if name is not None:
            query["$and"] = [{"$or": [{"event": name}, {"name": name}]}]
        if before is not None:
            at, event_id = before
            query["$or"] = [
                {"timestamp": {"$lt": at}},
                {"timestamp": at, "_id": {"$lt": event_id}},
            ]
        cursor = (
            self.events.find(query)
            .sort([("timestamp", DESCENDING), ("_id", DESCENDING)])
            .limit(first)
        )
        return [doc async for doc in cursor]
