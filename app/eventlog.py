"""The event log as the profile builder sees it: claim pending events, mark them applied.

Ingest (`app/ingest/`) appends to `events`; this module leases, reads and
finishes them. A lease lets several workers run at once without applying an
event twice, and lets an event of a killed worker go to another after expiry.
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateMany
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

EVENTS = "events"
PENDING = "pending"
APPLIED = "applied"

Document = dict[str, Any]

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
}


class EventLog:
    """Leases pending events to one worker at a time and records where each was applied."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.events = db[EVENTS]

    async def claim(
        self, *, owner: str, limit: int, now: datetime, lease: timedelta
    ) -> list[Document]:
        """Leases up to `limit` pending events, oldest first, and returns them."""
        free: Document = {
            "status": PENDING,
            "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}],
        }
        candidates = [
            doc["_id"]
            async for doc in self.events.find(free, {"_id": 1})
            .sort("received_at", ASCENDING)
            .limit(limit)
        ]
        if not candidates:
            return []
        # Another worker may lease some of these between our read and this write;
        # the filter makes each event go to exactly one of us.
        await self.events.update_many(
            {"_id": {"$in": candidates}, **free},
            {"$set": {"lease_owner": owner, "lease_until": now + lease}},
        )
        return [
            doc
            async for doc in self.events.find(
                {"_id": {"$in": candidates}, "lease_owner": owner, "status": PENDING},
                BUILDER_FIELDS,
            )
        ]

    async def still_leased(
        self, event_ids: Iterable[str], *, owner: str, session: AsyncClientSession
    ) -> list[Document]:
        """Returns those of the events this owner still holds, pending, inside a transaction."""
        return [
            doc
            async for doc in self.events.find(
                {"_id": {"$in": list(event_ids)}, "lease_owner": owner, "status": PENDING},
                BUILDER_FIELDS,
                session=session,
            )
        ]

    async def mark_applied(
        self, assignment: Mapping[str, Sequence[str]], *, now: datetime, session: AsyncClientSession
    ) -> None:
        """Records, per profile, that its events are applied, and releases their leases."""
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

    async def repoint(self, from_profile: str, to_profile: str) -> None:
        """Moves every event of a merged-away profile to its survivor."""
        await self.events.update_many(
            {"profile_id": from_profile}, {"$set": {"profile_id": to_profile}}
        )

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
        """Returns how many events wait to be applied."""
        return await self.events.count_documents({"status": PENDING})

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
