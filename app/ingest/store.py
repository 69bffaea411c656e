"""The only code that reads or writes `events`, `quarantine` and `sources`."""

import builtins
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.write_concern import WriteConcern

from app.auth import hash_secret
from app.ingest.errors import SourceExists
from app.ingest.models import QuarantinedEvent, Source, check_source_name
from app.mongo import Document
from profiles.ids import new_id

EVENTS = "events"
QUARANTINE = "quarantine"
SOURCES = "sources"

WRITE_KEY_PREFIX = "kwk_"
_DUPLICATE_KEY = 11000

INDEXES = {
    EVENTS: [
        IndexModel(
            [("source", ASCENDING), ("message_id", ASCENDING)],
            name="source_message_id",
            unique=True,
        ),
        IndexModel([("status", ASCENDING), ("received_at", ASCENDING)], name="status_received_at"),
        IndexModel([("profile_id", ASCENDING), ("timestamp", ASCENDING)], name="profile_timestamp"),
    ],
    QUARANTINE: [IndexModel([("received_at", ASCENDING)], name="received_at")],
    SOURCES: [IndexModel([("key_hash", ASCENDING)], name="key_hash", unique=True)],
}


def now_ms() -> datetime:
    """Returns the current UTC time truncated to milliseconds, as MongoDB keeps it."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def events_write_concern(w: str | int = 1) -> WriteConcern:
    """Returns the journaled write concern of the event log: `w` is a number or `majority`."""
    level: str | int = int(w) if isinstance(w, str) and w.isdigit() else w
    return WriteConcern(w=level, j=True)


def _source(doc: Mapping[str, Any]) -> Source:
    return Source(name=doc["_id"], created_at=doc["created_at"], revoked_at=doc.get("revoked_at"))


class SourceStore:
    """The sources in one database, each with the hash of its write key."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._sources = db[SOURCES]

    async def create(self, name: str) -> tuple[Source, str]:
        """Creates a source and returns it with its write key, which nothing can show again."""
        source = Source(name=check_source_name(name), created_at=now_ms())
        write_key = f"{WRITE_KEY_PREFIX}{secrets.token_urlsafe(32)}"
        try:
            await self._sources.insert_one(
                {
                    "_id": source.name,
                    "key_hash": hash_secret(write_key),
                    "created_at": source.created_at,
                    "revoked_at": None,
                }
            )
        except DuplicateKeyError:
            raise SourceExists(f"a source named {name!r} exists already") from None
        return source, write_key

    async def verify(self, write_key: str) -> Source | None:
        """Returns the unrevoked source whose write key this is, or None."""
        doc = await self._sources.find_one({"key_hash": hash_secret(write_key), "revoked_at": None})
        return None if doc is None else _source(doc)

    async def revoke(self, name: str) -> bool:
        """Revokes a source's write key; returns False when no source has that name."""
        result = await self._sources.update_one(
            {"_id": name, "revoked_at": None}, {"$set": {"revoked_at": now_ms()}}
        )
        if result.matched_count:
            return True
        return await self._sources.find_one({"_id": name}, {"_id": 1}) is not None

    # Last in the class body: from here on `list` names this method, not the builtin.
    async def list(self) -> builtins.list[Source]:
        """Returns every source, revoked ones included, oldest first."""
        cursor = self._sources.find({}, {"key_hash": 0}).sort(
            [("created_at", ASCENDING), ("_id", ASCENDING)]
        )
        return [_source(doc) async for doc in cursor]


@dataclass(frozen=True)
class Appended:
    """What appending events did: how many were new, how many were stored before."""

    inserted: int
    duplicates: int


def _quarantined(doc: Mapping[str, Any]) -> QuarantinedEvent:
    return QuarantinedEvent(
        id=doc["_id"],
        source=doc["source"],
        received_at=doc["received_at"],
        reason=doc["reason"],
        raw=doc["raw"],
        message_id=doc.get("message_id"),
        replayed_at=doc.get("replayed_at"),
    )


class EventStore:
    """The event log and its quarantine, written with a journaled write concern."""

    def __init__(
        self, db: AsyncDatabase[Document], *, write_concern: WriteConcern | None = None
    ) -> None:
        concern = write_concern or events_write_concern()
        self.events = db.get_collection(EVENTS, write_concern=concern)
        self.quarantine = db.get_collection(QUARANTINE, write_concern=concern)

    async def append(self, events: Sequence[Document]) -> Appended:
        """Stores events once per (source, message_id); a re-sent one counts as a duplicate."""
        if not events:
            return Appended(0, 0)
        try:
            result = await self.events.insert_many(list(events), ordered=False)
        except BulkWriteError as exc:
            details = exc.details
            others = [e for e in details.get("writeErrors", []) if e.get("code") != _DUPLICATE_KEY]
            # Only "already stored" is fine; anything else (or an unmet write
            # concern) means the events may not be durable, so the caller must fail.
            if others or details.get("writeConcernErrors"):
                raise
            inserted = int(details.get("nInserted", 0))
            return Appended(inserted, len(events) - inserted)
        return Appended(len(result.inserted_ids), 0)

    async def add_to_quarantine(
        self,
        rows: Sequence[tuple[str | None, str, str]],
        *,
        source: str,
        received_at: datetime,
    ) -> builtins.list[str]:
        """Keeps rejected events as (message_id, reason, raw JSON) rows; returns their ids."""
        if not rows:
            return []
        docs: builtins.list[Document] = [
            {
                "_id": new_id("qtn"),
                "source": source,
                "received_at": received_at,
                "reason": reason,
                "raw": raw,
                "message_id": message_id,
            }
            for message_id, reason, raw in rows
        ]
        await self.quarantine.insert_many(docs, ordered=True)
        return [str(doc["_id"]) for doc in docs]

    async def quarantined(
        self, *, limit: int, after: str | None = None
    ) -> builtins.list[QuarantinedEvent]:
        """Returns up to `limit` quarantined events in id (arrival) order, after `after`."""
        query: Document = {} if after is None else {"_id": {"$gt": after}}
        cursor = self.quarantine.find(query).sort("_id", ASCENDING).limit(limit)
        return [_quarantined(doc) async for doc in cursor]

    async def quarantined_by_id(self, ids: Sequence[str]) -> builtins.list[QuarantinedEvent]:
        """Returns the quarantined events with these ids, in id order; unknown ids are skipped."""
        cursor = self.quarantine.find({"_id": {"$in": list(ids)}}).sort("_id", ASCENDING)
        return [_quarantined(doc) async for doc in cursor]

    async def release(self, ids: Sequence[str]) -> int:
        """Removes events from quarantine (once stored as events); returns how many."""
        if not ids:
            return 0
        result = await self.quarantine.delete_many({"_id": {"$in": list(ids)}})
        return result.deleted_count

    async def update_reasons(self, reasons: Mapping[str, str], *, at: datetime) -> None:
        """Records the latest reason each still-invalid quarantined event is refused."""
        if not reasons:
            return
        await self.quarantine.bulk_write(
            [
                UpdateOne({"_id": qid}, {"$set": {"reason": reason, "replayed_at": at}})
                for qid, reason in reasons.items()
            ],
            ordered=False,
        )
