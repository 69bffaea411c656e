"""The identity graph store: the only module of `identity` that talks to MongoDB."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from identity import merge as merge_rules
from identity.merge import Actor, MergeRecord, MergeStatus, Moved
from profiles.models import Profile
from profiles.store import (
    PROFILES,
    ProfileStore,
    given_back_rows,
    moved_rows,
    profile_from_doc,
    profile_projection,
)

IDENTITIES = "identities"
MERGES = "merges"
SUGGESTIONS = "merge_suggestions"
MATCH_MODELS = "match_models"
AUDIT_LOG = "audit_log"
DUPLICATE_KEY = 11000

Document = dict[str, Any]

INDEXES = {
    IDENTITIES: [
        IndexModel([("profile_id", ASCENDING), ("kind", ASCENDING)], name="profile_kind"),
        IndexModel([("shared", ASCENDING)], name="shared"),
    ],
    SUGGESTIONS: [
        # One indexed range serves the review queue: best score first, then by id.
        IndexModel([("status", ASCENDING), ("rank", ASCENDING)], name="status_rank"),
        IndexModel([("profiles", ASCENDING)], name="profiles"),
    ],
    MERGES: [
        IndexModel([("survivor", ASCENDING)], name="survivor"),
        IndexModel([("merged", ASCENDING)], name="merged"),
    ],
    AUDIT_LOG: [
        IndexModel([("seq", DESCENDING)], name="seq"),
        IndexModel([("action", ASCENDING), ("seq", DESCENDING)], name="action_seq"),
    ],
}


class IdentityStore:
    """Maps identity keys (`kind:normalised value`) to the profile that holds them."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.identities = db[IDENTITIES]
        self.merges = db[MERGES]

    async def claim(self, claims: Mapping[str, str], *, now: datetime) -> dict[str, str]:
        """Links each unclaimed key to its profile in one write; returns every key's owner.

        The unique `_id` decides races: a key already claimed keeps its owner.
        """
        if not claims:
            return {}
        docs = [
            {"_id": key, "kind": key.partition(":")[0], "profile_id": pid, "linked_at": now}
            for key, pid in claims.items()
        ]
        try:
            await self.identities.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise
        return await self.owners(claims)

    async def owners(self, keys: Iterable[str]) -> dict[str, str]:
        """Returns the profile id holding each of the keys that is claimed, in one round trip."""
        return (await self.lookup(keys))[0]

    async def lookup(self, keys: Iterable[str]) -> tuple[dict[str, str], frozenset[str]]:
        """Returns the holder of each claimed key, and which keys are shared, in one round trip."""
        wanted = list(set(keys))
        if not wanted:
            return {}, frozenset()
        owners: dict[str, str] = {}
        shared: set[str] = set()
        async for doc in self.identities.find(
            {"_id": {"$in": wanted}}, {"profile_id": 1, "shared": 1}
        ):
            owners[doc["_id"]] = doc["profile_id"]
            if doc.get("shared"):
                shared.add(doc["_id"])
        return owners, frozenset(shared)

    async def profiles_for(
        self, keys: Iterable[str], *, trait_keys: Iterable[str] | None = None
    ) -> dict[str, Profile]:
        """Returns the profile holding each claimed key, in one round trip.

        A `$lookup` from the graph to the profiles halves the round trips of a
        lookup by email, the read templates make most. With `trait_keys`, only
        those traits are read. Merged-away profiles come back as they are; the
        caller follows `merged_into`.
        """
        wanted = list(set(keys))
        if not wanted:
            return {}
        lookup: Document = {
            "from": PROFILES,
            "localField": "profile_id",
            "foreignField": "_id",
            "as": "profile",
        }
        projection = profile_projection(trait_keys)
        if projection is not None:
            lookup["pipeline"] = [{"$project": projection}]
        pipeline = [{"$match": {"_id": {"$in": wanted}}}, {"$lookup": lookup}]
        found: dict[str, Profile] = {}
        async for doc in await self.identities.aggregate(pipeline):
            if doc["profile"]:
                found[doc["_id"]] = profile_from_doc(doc["profile"][0])
        return found

    async def held_keys(
        self,
        profile_ids: Iterable[str],
        *,
        kinds: Iterable[str],
        session: AsyncClientSession | None = None,
    ) -> dict[str, frozenset[str]]:
        """Returns the keys of the given kinds each of the profiles holds (none: an empty set)."""
        ids = list(set(profile_ids))
        found: dict[str, set[str]] = {pid: set() for pid in ids}
        if not ids:
            return {}
        async for doc in self.identities.find(
            {"profile_id": {"$in": ids}, "kind": {"$in": list(kinds)}},
            {"profile_id": 1},
            session=session,
        ):
            found[doc["profile_id"]].add(doc["_id"])
        return {pid: frozenset(keys) for pid, keys in found.items()}

    async def note_contested(
        self, contested: Mapping[str, Iterable[str]], *, shared_after: int
    ) -> dict[str, str]:
        """Records the other user ids each key was seen with; returns keys now shared, by holder.

        A key counts its holder's user and the others recorded here: past
        `shared_after` distinct people, it is shared.
        """
        if not contested:
            return {}
        await self.identities.bulk_write(
            [
                UpdateOne(
                    {"_id": key, "shared": {"$ne": True}},
                    {"$addToSet": {"seen_with": {"$each": sorted(user_keys)}}},
                )
                for key, user_keys in contested.items()
            ],
            ordered=False,
        )
        newly: dict[str, str] = {}
        async for doc in self.identities.find(
            {"_id": {"$in": list(contested)}, "shared": {"$ne": True}},
            {"profile_id": 1, "seen_with": 1},
        ):
            if 1 + len(doc.get("seen_with", ())) > shared_after:
                newly[doc["_id"]] = doc["profile_id"]
        return newly

    async def mark_shared(
        self, key: str, *, holder: str, device_profile: str, now: datetime
    ) -> bool:
        """Hands a shared key from its holder to a device profile of its own; once."""
        result = await self.identities.update_one(
            {"_id": key, "profile_id": holder, "shared": {"$ne": True}},
            {
                "$set": {
                    "shared": True,
                    "shared_at": now,
                    "held_by": holder,
                    "profile_id": device_profile,
                }
            },
        )
        return result.modified_count == 1

    async def shared(self, *, first: int) -> list[Document]:
        """Returns shared keys, most recently found first."""
        return [
            doc
            async for doc in self.identities.find({"shared": True})
            .sort("shared_at", -1)
            .limit(first)
        ]

    async def move_keys(
        self, from_profile: str, to_profile: str, *, session: AsyncClientSession
    ) -> int:
        """Moves every key of a merged-away profile to its survivor; returns how many moved."""
        result = await self.identities.update_many(
            {"profile_id": from_profile}, moved_rows(to_profile, from_profile), session=session
        )
        return result.modified_count

    async def give_back_keys(
        self, merged: str, *, holder: str, session: AsyncClientSession
    ) -> list[str]:
        """Gives an unmerged profile back the keys it brought; returns them."""
        keys = [
            doc["_id"]
            async for doc in self.identities.find(
                {"profile_id": holder, "merged_from": merged}, {"_id": 1}, session=session
            )
        ]
        if keys:
            await self.identities.update_many(
                {"profile_id": holder, "merged_from": merged},
                given_back_rows(merged),
                session=session,
            )
        return keys

    async def keys_since(
        self, profile_id: str, since: datetime, *, session: AsyncClientSession
    ) -> list[str]:
        """Returns the keys a profile claimed at or after an instant."""
        return [
            doc["_id"]
            async for doc in self.identities.find(
                {"profile_id": profile_id, "linked_at": {"$gte": since}},
                {"_id": 1},
                session=session,
            )
        ]

    async def owners_in(
        self, keys: Iterable[str], *, session: AsyncClientSession
    ) -> dict[str, str]:
        """Returns the holder of each claimed key, read inside a transaction."""
        return {
            doc["_id"]: doc["profile_id"]
            async for doc in self.identities.find(
                {"_id": {"$in": list(set(keys))}}, {"profile_id": 1}, session=session
            )
        }

    async def hand_over(
        self, keys: Sequence[str], *, to_profile: str, session: AsyncClientSession
    ) -> None:
        """Gives keys to another profile."""
        if keys:
            await self.identities.update_many(
                {"_id": {"$in": list(keys)}}, {"$set": {"profile_id": to_profile}}, session=session
            )

    async def keys_of(
        self, profile_id: str, *, session: AsyncClientSession | None = None
    ) -> list[str]:
        """Returns the keys a profile holds."""
        return [
            doc["_id"]
            async for doc in self.identities.find(
                {"profile_id": profile_id}, {"_id": 1}, session=session
            )
        ]


def _merge_record(doc: Mapping[str, Any]) -> MergeRecord:
    return MergeRecord(
        id=doc["_id"],
        survivor=doc["survivor"],
        merged=doc["merged"],
        actor=Actor.from_document(doc["actor"]),
        reason=doc.get("reason", ""),
        merged_at=doc["merged_at"],
        status=MergeStatus(doc["status"]),
        score=doc.get("score"),
        evidence=tuple(doc.get("evidence", ())),
        cause=doc.get("cause") or {},
        moved=Moved.from_document(doc.get("moved")),
        segments_before=doc.get("segments_before") or {},
        undone_at=doc.get("undone_at"),
        undone_by=Actor.from_document(doc["undone_by"]) if doc.get("undone_by") else None,
        undo_reason=doc.get("undo_reason"),
        given_back=Moved.from_document(doc.get("given_back")),
    )


class MergeLedger:
    """The `merges` collection: every merge, who made it, why, and how to undo it."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.merges = db[MERGES]

    async def record(self, merge: MergeRecord, *, session: AsyncClientSession) -> None:
        """Adds a merge to the ledger."""
        await self.merges.insert_one(
            {
                "_id": merge.id,
                "survivor": merge.survivor,
                "merged": merge.merged,
                "actor": merge.actor.to_document(),
                "reason": merge.reason,
                "merged_at": merge.merged_at,
                "status": merge.status.value,
                "score": merge.score,
                "evidence": [dict(e) for e in merge.evidence],
                "cause": dict(merge.cause),
                "moved": merge.moved.to_document(),
                "segments_before": {k: list(v) for k, v in merge.segments_before.items()},
            },
            session=session,
        )

    async def get(
        self, merge_id: str, *, session: AsyncClientSession | None = None
    ) -> MergeRecord | None:
        """Returns a merge by id."""
        doc = await self.merges.find_one({"_id": merge_id}, session=session)
        return None if doc is None else _merge_record(doc)

    async def done(
        self, *, survivor: str, merged: str, session: AsyncClientSession
    ) -> MergeRecord | None:
        """Returns the standing (not undone) merge of one profile into another, if any."""
        doc = await self.merges.find_one(
            {"merged": merged, "survivor": survivor, "status": MergeStatus.DONE.value},
            session=session,
        )
        return None if doc is None else _merge_record(doc)

    async def undone(
        self,
        merge_id: str,
        *,
        actor: Actor,
        reason: str,
        given_back: Moved,
        now: datetime,
        session: AsyncClientSession,
    ) -> bool:
        """Marks a standing merge undone; returns False if it was not standing."""
        result = await self.merges.update_one(
            {"_id": merge_id, "status": MergeStatus.DONE.value},
            {
                "$set": {
                    "status": MergeStatus.UNDONE.value,
                    "undone_at": now,
                    "undone_by": actor.to_document(),
                    "undo_reason": reason,
                    "given_back": given_back.to_document(),
                }
            },
            session=session,
        )
        return result.modified_count == 1

    async def of_profile(self, profile_id: str, *, first: int = 100) -> list[MergeRecord]:
        """Returns the merges a profile took part in, either side, newest first."""
        found: dict[str, Document] = {}
        for side in ("survivor", "merged"):
            # One query per side: each is served by its own index.
            async for doc in self.merges.find({side: profile_id}).limit(first):
                found[doc["_id"]] = doc
        docs = sorted(found.values(), key=lambda d: (d["merged_at"], d["_id"]), reverse=True)
        return [_merge_record(d) for d in docs[:first]]


class AuditLog:
    """The `audit_log` collection: what admins did, newest first."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.entries = db[AUDIT_LOG]

    async def record(self, entry: Mapping[str, Any], *, session: AsyncClientSession | None) -> None:
        """Appends an entry (an `_id` that sorts by time, `at`, `actor`, `action`, ...)."""
        await self.entries.insert_one({**entry, "seq": entry["_id"]}, session=session)

    async def page(
        self, *, first: int, after: str | None, action: str | None
    ) -> tuple[list[Document], bool]:
        """Returns entries newest first after a cursor (an entry id), and if more follow."""
        query: Document = {}
        if action is not None:
            query["action"] = action
        if after is not None:
            # `seq` copies the time-sortable `_id`: SecantusDB serves `_id` ranges by scanning.
            query["seq"] = {"$lt": after}
        docs = [
            doc async for doc in self.entries.find(query).sort("seq", DESCENDING).limit(first + 1)
        ]
        return docs[:first], len(docs) > first


async def separated(
    store: ProfileStore,
    profile_ids: Iterable[str],
    *,
    session: AsyncClientSession | None = None,
) -> frozenset[frozenset[str]]:
    """Returns the pairs among the live profiles that an admin said are not one person.

    A pair counts when anyone merged into one side was kept apart from anyone
    merged into the other, so a "not the same person" survives later merges.
    """
    ids = sorted(set(profile_ids))
    sides = await store.merge_sides(ids, session=session)
    lineage = {pid: frozenset({pid, *sides[pid].get("absorbed", ())}) for pid in sides}
    members = {p for group in lineage.values() for p in group}
    if not any(doc.get("apart_from") for doc in sides.values()) and members == set(sides):
        return frozenset()
    docs = await store.merge_sides(members - set(sides), session=session)
    docs.update(sides)
    apart = {pid: frozenset(doc.get("apart_from", ())) for pid, doc in docs.items()}
    live = sorted(lineage)
    return frozenset(
        frozenset((a, b))
        for n, a in enumerate(live)
        for b in live[n + 1 :]
        if merge_rules.kept_apart(lineage[a], lineage[b], apart)
    )


class SuggestionStatus(StrEnum):
    """Where a merge suggestion stands."""

    OPEN = "open"
    MERGED = "merged"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Suggestion:
    """Two profiles the matcher found alike, with the evidence, for a person to review."""

    id: str
    profiles: tuple[str, str]
    score: float
    evidence: tuple[Mapping[str, Any], ...]
    status: SuggestionStatus
    source: str  # `online` (the builder) or `dedupe` (a batch run)
    created_at: datetime
    updated_at: datetime
    note: str | None = None  # e.g. why an automatic merge was not made
    rank: str = ""  # its position in the review queue, for cursors


def suggestion_id(a: str, b: str) -> str:
    """Returns the id of the suggestion about two profiles, whichever order they come in."""
    first, second = sorted((a, b))
    return f"sug_{first}_{second}"


def _rank(score: float, sid: str) -> str:
    # Sorts ascending as score descending, then id: one indexed range pages the queue.
    return f"{1 - score:.6f}|{sid}"


def _suggestion(doc: Mapping[str, Any]) -> Suggestion:
    a, b = doc["profiles"]
    return Suggestion(
        id=doc["_id"],
        profiles=(a, b),
        score=doc["score"],
        evidence=tuple(doc.get("evidence", ())),
        status=SuggestionStatus(doc["status"]),
        source=doc["source"],
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        note=doc.get("note"),
        rank=doc["rank"],
    )


@dataclass(frozen=True)
class Proposal:
    """A scored pair to record as a suggestion."""

    a: str
    b: str
    score: float
    evidence: tuple[Mapping[str, Any], ...]
    note: str | None = None


class SuggestionStore:
    """The review queue of merge suggestions, and the fitted match model."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.suggestions = db[SUGGESTIONS]
        self.models = db[MATCH_MODELS]

    async def record(self, proposals: Sequence[Proposal], *, source: str, now: datetime) -> int:
        """Records suggestions, one per pair however often found; returns how many are new.

        A pair found again gets its latest score and evidence; its status stays,
        so a rejected pair is not offered again.
        """
        if not proposals:
            return 0
        requests = []
        for p in proposals:
            sid = suggestion_id(p.a, p.b)
            requests.append(
                UpdateOne(
                    {"_id": sid},
                    {
                        "$set": {
                            "score": p.score,
                            "rank": _rank(p.score, sid),
                            "evidence": [dict(e) for e in p.evidence],
                            "note": p.note,
                            "updated_at": now,
                        },
                        "$setOnInsert": {
                            "profiles": sorted((p.a, p.b)),
                            "status": SuggestionStatus.OPEN.value,
                            "source": source,
                            "created_at": now,
                        },
                    },
                    upsert=True,
                )
            )
        result = await self.suggestions.bulk_write(requests, ordered=False)
        return result.upserted_count

    async def page(
        self,
        *,
        status: SuggestionStatus,
        min_score: float,
        first: int,
        after: str | None = None,
    ) -> tuple[list[Suggestion], bool]:
        """Returns suggestions in a status, best score first, after a cursor; and if more follow."""
        rank: Document = {"$lte": f"{1 - min_score:.6f}|~"}
        if after is not None:
            rank["$gt"] = after
        docs = [
            doc
            async for doc in self.suggestions.find({"status": status.value, "rank": rank})
            .sort("rank", ASCENDING)
            .limit(first + 1)
        ]
        return [_suggestion(d) for d in docs[:first]], len(docs) > first

    async def get(
        self, sid: str, *, session: AsyncClientSession | None = None
    ) -> Suggestion | None:
        """Returns a suggestion by id."""
        doc = await self.suggestions.find_one({"_id": sid}, session=session)
        return None if doc is None else _suggestion(doc)

    async def decide(
        self,
        sid: str,
        status: SuggestionStatus,
        *,
        note: str,
        now: datetime,
        session: AsyncClientSession | None = None,
    ) -> bool:
        """Closes a suggestion (merged or rejected) with a note; returns whether it existed."""
        result = await self.suggestions.update_one(
            {"_id": sid},
            {"$set": {"status": status.value, "note": note, "updated_at": now}},
            session=session,
        )
        return result.matched_count == 1

    async def load_model(self) -> Document | None:
        """Returns the match model the last dedupe run fitted, if any."""
        return await self.models.find_one({"_id": "current"})

    async def save_model(self, model: Mapping[str, Any], *, now: datetime) -> None:
        """Stores a fitted match model for the builder to score with."""
        await self.models.replace_one(
            {"_id": "current"}, {"model": dict(model), "fitted_at": now}, upsert=True
        )
