"""The segment store: the only module of `profiles.segments` that talks to MongoDB.

It owns `segments` (definitions, one document per segment, its versions in
`segment_versions`) and `segment_log` (every entry and exit), and reads and
writes memberships on `profiles` (`segments`, `next_eval_at`). It reads
`events` for the rules' event conditions.
"""

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from profiles.ids import new_id
from profiles.segments.models import Change, Transition

SEGMENTS = "segments"
SEGMENT_VERSIONS = "segment_versions"
SEGMENT_LOG = "segment_log"
PROFILES = "profiles"
EVENTS = "events"

Document = dict[str, Any]

INDEXES = {
    SEGMENT_LOG: [
        IndexModel([("segment_id", ASCENDING), ("seq", DESCENDING)], name="segment_seq"),
        IndexModel([("profile_id", ASCENDING), ("seq", DESCENDING)], name="profile_seq"),
    ],
    SEGMENT_VERSIONS: [
        IndexModel([("segment_id", ASCENDING), ("version", DESCENDING)], name="segment_version"),
    ],
}

# What evaluating rules reads of a profile.
FACT_FIELDS = {
    "traits": 1,
    "stats": 1,
    "computed": 1,
    "consent": 1,
    "segments": 1,
    "next_eval_at": 1,
}


@dataclass(frozen=True)
class SegmentRecord:
    """A segment as stored: its current definition and version."""

    id: str
    name: str
    description: str
    definition: Mapping[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    deleted: bool = False
    size: int = 0
    template: str | None = None


@dataclass(frozen=True)
class LogEntry:
    """One row of `segment_log`."""

    id: str
    segment_id: str
    segment_version: int
    profile_id: str
    change: Change
    at: datetime
    cause: Mapping[str, Any]


def _segment(doc: Mapping[str, Any]) -> SegmentRecord:
    return SegmentRecord(
        id=doc["_id"],
        name=doc["name"],
        description=doc.get("description", ""),
        definition=doc["definition"],
        version=doc["version"],
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        deleted=bool(doc.get("deleted")),
        size=doc.get("size", 0),
        template=doc.get("template"),
    )


def _entry(doc: Mapping[str, Any]) -> LogEntry:
    return LogEntry(
        id=doc["_id"],
        segment_id=doc["segment_id"],
        segment_version=doc["segment_version"],
        profile_id=doc["profile_id"],
        change=Change(doc["change"]),
        at=doc["at"],
        cause=doc.get("cause") or {},
    )


class SegmentStore:
    """Segment definitions, memberships on profiles, and the membership log."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.segments = db[SEGMENTS]
        self.versions = db[SEGMENT_VERSIONS]
        self.log = db[SEGMENT_LOG]
        self.profiles = db[PROFILES]
        self.events = db[EVENTS]

    # --- definitions -------------------------------------------------------------------

    async def insert(self, record: SegmentRecord, *, actor: str) -> None:
        """Stores a new segment and its first version."""
        await self.segments.insert_one(
            {
                "_id": record.id,
                "name": record.name,
                "description": record.description,
                "definition": dict(record.definition),
                "version": record.version,
                "created_at": record.created_at,
                "updated_at": record.updated_at,
                "deleted": False,
                "size": 0,
                "template": record.template,
            }
        )
        await self._version(record, actor=actor)

    async def replace(self, record: SegmentRecord, *, expected_version: int, actor: str) -> bool:
        """Stores a new version of a segment if it is still at `expected_version`."""
        result = await self.segments.update_one(
            {"_id": record.id, "version": expected_version, "deleted": False},
            {
                "$set": {
                    "name": record.name,
                    "description": record.description,
                    "definition": dict(record.definition),
                    "version": record.version,
                    "updated_at": record.updated_at,
                }
            },
        )
        if result.matched_count == 1:
            await self._version(record, actor=actor)
        return result.matched_count == 1

    async def _version(self, record: SegmentRecord, *, actor: str) -> None:
        await self.versions.replace_one(
            {"_id": f"{record.id}@{record.version}"},
            {
                "segment_id": record.id,
                "version": record.version,
                "name": record.name,
                "definition": dict(record.definition),
                "created_at": record.updated_at,
                "actor": actor,
            },
            upsert=True,
        )

    async def mark_deleted(self, segment_id: str, *, now: datetime) -> bool:
        """Marks a segment deleted (its log stays); returns whether it was live."""
        result = await self.segments.update_one(
            {"_id": segment_id, "deleted": False}, {"$set": {"deleted": True, "updated_at": now}}
        )
        return result.modified_count == 1

    async def get(self, segment_id: str) -> SegmentRecord | None:
        """Returns a segment, deleted ones included."""
        doc = await self.segments.find_one({"_id": segment_id})
        return None if doc is None else _segment(doc)

    async def live(self) -> list[SegmentRecord]:
        """Returns every segment not deleted, by id."""
        return [_segment(d) async for d in self.segments.find({"deleted": False}).sort("_id", 1)]

    async def versions_of(self, segment_id: str) -> list[Document]:
        """Returns a segment's versions, newest first."""
        return [d async for d in self.versions.find({"segment_id": segment_id}).sort("version", -1)]

    async def set_size(self, segment_id: str, size: int, *, now: datetime) -> None:
        """Records a segment's member count after an evaluation."""
        await self.segments.update_one(
            {"_id": segment_id}, {"$set": {"size": size, "evaluated_at": now}}
        )

    async def add_to_size(self, changes: Mapping[str, int]) -> None:
        """Adjusts segments' member counts by what real-time evaluation changed."""
        requests = [
            UpdateOne({"_id": sid}, {"$inc": {"size": n}}) for sid, n in changes.items() if n
        ]
        if requests:
            await self.segments.bulk_write(requests, ordered=False)

    async def unscheduled(self) -> list[SegmentRecord]:
        """Returns live segments whose time deadlines were not computed for their version."""
        return [
            _segment(d)
            async for d in self.segments.find({"deleted": False})
            if d.get("scheduled_version") != d["version"]
        ]

    async def mark_scheduled(self, segment_id: str, version: int) -> None:
        """Records that every profile's deadline for this version of a segment is stored."""
        await self.segments.update_one(
            {"_id": segment_id}, {"$set": {"scheduled_version": version}}
        )

    async def next_evals(self, profile_ids: Iterable[str]) -> dict[str, datetime | None]:
        """Returns the stored next evaluation time of each profile."""
        return {
            d["_id"]: d.get("next_eval_at")
            async for d in self.profiles.find(
                {"_id": {"$in": list(set(profile_ids))}}, {"next_eval_at": 1}
            )
        }

    # --- evaluation reads --------------------------------------------------------------

    async def evaluate(self, pipeline: Sequence[Mapping[str, Any]]) -> AsyncIterator[str]:
        """Yields the ids of live profiles a compiled rule admits."""
        stages = [{"$match": {"merged_into": None}}, *pipeline, {"$project": {"_id": 1}}]
        async for doc in await self.profiles.aggregate(stages):
            yield doc["_id"]

    async def members(self, segment_id: str) -> AsyncIterator[str]:
        """Yields the ids of the live profiles currently in a segment."""
        async for doc in self.profiles.find(
            {"segments": segment_id, "merged_into": None}, {"_id": 1}
        ):
            yield doc["_id"]

    async def member_page(
        self,
        segment_id: str,
        *,
        first: int,
        after: str | None,
        pipeline: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[list[str], bool]:
        """Returns up to `first` member ids after a cursor (by id), and if more follow.

        An extra compiled `pipeline` narrows the members further (mailable ones).
        """
        match: Document = {"segments": segment_id, "merged_into": None}
        if after is not None:
            match["_id"] = {"$gt": after}
        stages: list[Mapping[str, Any]] = [
            {"$match": match},
            {"$sort": {"_id": 1}},
            *pipeline,
            {"$limit": first + 1},
            {"$project": {"_id": 1}},
        ]
        ids = [doc["_id"] async for doc in await self.profiles.aggregate(stages)]
        return ids[:first], len(ids) > first

    async def facts(
        self, profile_ids: Iterable[str], *, session: AsyncClientSession | None = None
    ) -> dict[str, Document]:
        """Returns what rules read of each live profile, in one round trip."""
        return {
            doc["_id"]: doc
            async for doc in self.profiles.find(
                {"_id": {"$in": list(set(profile_ids))}, "merged_into": None},
                FACT_FIELDS,
                session=session,
            )
        }

    async def events_of(
        self, profile_ids: Iterable[str], query: Mapping[str, Any]
    ) -> dict[str, list[Document]]:
        """Returns the profiles' events a rule needs (`query` from `rules.event_query`)."""
        found: dict[str, list[Document]] = {pid: [] for pid in profile_ids}
        if not found:
            return found
        projection = {
            "type": 1,
            "event": 1,
            "name": 1,
            "properties": 1,
            "timestamp": 1,
            "profile_id": 1,
        }
        # `profile_id` first: SecantusDB serves the filter through the (profile_id,
        # timestamp) index only when it leads; after `status` it scans the whole log.
        async for doc in self.events.find(
            {"profile_id": {"$in": list(found)}, **query}, projection
        ):
            found[doc["profile_id"]].append(doc)
        return found

    async def due(self, *, now: datetime, limit: int) -> list[str]:
        """Returns live profiles whose memberships may change by time by `now`, soonest first."""
        return [
            doc["_id"]
            async for doc in self.profiles.find(
                {"next_eval_at": {"$lte": now}}, {"_id": 1, "merged_into": 1}
            )
            .sort("next_eval_at", 1)
            .limit(limit)
            if doc.get("merged_into") is None
        ]

    async def scan_live(self, *, batch_size: int = 500) -> AsyncIterator[list[str]]:
        """Yields every live profile id, in batches."""
        batch: list[str] = []
        async for doc in self.profiles.find(
            {"merged_into": None}, {"_id": 1}, batch_size=batch_size
        ):
            batch.append(doc["_id"])
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    # --- writes ------------------------------------------------------------------------

    async def apply(
        self,
        transitions: Sequence[Transition],
        next_eval: Mapping[str, datetime | None],
        *,
        session: AsyncClientSession,
    ) -> list[Transition]:
        """Writes membership changes, their log rows and profiles' next evaluation times.

        Run in a transaction (with the webhooks' outbox rows), so an entry or exit
        is recorded, applied and announced together or not at all. Changes that
        no longer hold (another writer applied them first) are dropped: writing
        the same documents makes concurrent transactions conflict and retry, so
        each entry and exit is logged once. Returns the changes kept.
        """
        current: dict[str, set[str]] = {}
        if transitions:
            async for doc in self.profiles.find(
                {"_id": {"$in": list({t.profile_id for t in transitions})}},
                {"segments": 1},
                session=session,
            ):
                current[doc["_id"]] = set(doc.get("segments", ()))
        kept: list[Transition] = []
        for t in transitions:
            members = current.get(t.profile_id)
            if members is None or (t.segment_id in members) == (t.change is Change.ENTERED):
                continue
            members.symmetric_difference_update({t.segment_id})
            kept.append(t)
        requests: list[UpdateOne] = [
            UpdateOne({"_id": pid}, {"$set": {"segments": sorted(current[pid])}})
            for pid in {t.profile_id for t in kept}
        ]
        for pid, at in next_eval.items():
            update: Document = (
                {"$set": {"next_eval_at": at}} if at else {"$unset": {"next_eval_at": ""}}
            )
            requests.append(UpdateOne({"_id": pid}, update))
        if requests:
            await self.profiles.bulk_write(requests, ordered=True, session=session)
        if kept:
            await self.log.insert_many([_log_doc(t) for t in kept], session=session)
        return kept

    async def history(
        self,
        *,
        segment_id: str | None = None,
        profile_id: str | None = None,
        first: int,
        after: str | None,
    ) -> tuple[list[LogEntry], bool]:
        """Returns log rows of a segment or a profile, newest first, after a cursor."""
        query: Document = {}
        if segment_id is not None:
            query["segment_id"] = segment_id
        if profile_id is not None:
            query["profile_id"] = profile_id
        if after is not None:
            query["seq"] = {"$lt": after}
        docs = [d async for d in self.log.find(query).sort("seq", DESCENDING).limit(first + 1)]
        return [_entry(d) for d in docs[:first]], len(docs) > first


def _log_doc(t: Transition) -> Document:
    entry_id = new_id("sgl", now_ms=int(t.at.timestamp() * 1000))
    return {
        "_id": entry_id,
        # `seq` copies the time-sortable `_id`: SecantusDB serves `_id` ranges by scanning.
        "seq": entry_id,
        "segment_id": t.segment_id,
        "segment_version": t.segment_version,
        "profile_id": t.profile_id,
        "change": t.change.value,
        "at": t.at,
        "cause": dict(t.cause),
    }
