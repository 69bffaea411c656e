"""The profile store: the only module of `profiles` that talks to MongoDB."""

import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from profiles.models import (
    Identifier,
    Observation,
    Profile,
    TraitDefinition,
    TraitType,
    TraitValue,
)

PROFILES = "profiles"
TRAIT_HISTORY = "trait_history"
TRAIT_CATALOG = "trait_catalog"
DUPLICATE_KEY = 11000

Document = dict[str, Any]

INDEXES = {
    PROFILES: [
        IndexModel([("segments", ASCENDING)], name="segments"),
        IndexModel([("stats.last_seen", DESCENDING)], name="last_seen"),
        IndexModel([("next_eval_at", ASCENDING)], name="next_eval_at", sparse=True),
        # The fuzzy matcher's blocking keys: a profile's look-alikes share one.
        IndexModel([("match_keys", ASCENDING)], name="match_keys"),
    ],
    TRAIT_HISTORY: [
        IndexModel(
            [("profile_id", ASCENDING), ("key", ASCENDING), ("observed_at", ASCENDING)],
            name="profile_key_time",
        ),
    ],
}


# Every profile field but `traits`, read whatever trait keys a caller asks for.
_PROFILE_FIELDS = (
    "identifiers",
    "stats",
    "computed",
    "segments",
    "consent",
    "version",
    "created_at",
    "updated_at",
    "merged_into",
)

# How long an open listing cursor waits for its next page, and how many may wait.
PAGE_CURSOR_TTL_S = 60.0
MAX_OPEN_PAGE_CURSORS = 32


def profile_projection(trait_keys: Iterable[str] | None) -> Document | None:
    """Returns a projection reading only the given traits (and every other field), or None."""
    if trait_keys is None:
        return None
    projection: Document = dict.fromkeys(_PROFILE_FIELDS, 1)
    projection.update({f"traits.{k}": 1 for k in trait_keys})
    return projection


@dataclass
class _OpenPage:
    cursor: AsyncCursor[Document]
    head: Document  # read to learn that a next page exists, and not yet returned
    expires_at: float


def history_id(profile_id: str, observation: Observation) -> str:
    """Returns the history row id of an observation; the same write always gets the same id.

    The origin (the event, import or admin write) is part of it: a retried write
    records nothing twice, while two events that say the same thing keep a row
    each, so an unmerge can give each its own.
    """
    fact = json.dumps(
        [
            profile_id,
            observation.key,
            observation.observed_at.isoformat(),
            observation.source,
            observation.value,
            observation.origin,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(fact.encode()).hexdigest()[:32]


def moved_rows(to_profile: str, from_profile: str) -> Document:
    """Returns the update that moves rows to a merge's survivor, noting where they came from.

    Identities, trait history and events all carry `merged_from`, the profiles
    they were merged away from, oldest first: an unmerge gives back exactly those.
    """
    return {"$set": {"profile_id": to_profile}, "$push": {"merged_from": from_profile}}


def given_back_rows(merged: str) -> list[Document]:
    """Returns the update that gives rows back to an unmerged profile.

    Entries after it in `merged_from` name later merges of its survivor; they go too.
    """
    position = {"$indexOfArray": ["$merged_from", merged]}
    return [
        {
            "$set": {
                "profile_id": merged,
                "merged_from": {"$slice": ["$merged_from", position]},
            }
        }
    ]


def _trait_doc(trait: TraitValue) -> Document:
    return {"value": trait.value, "observed_at": trait.observed_at, "source": trait.source}


def _add_identifiers(identifiers: Sequence[Identifier]) -> Document:
    return {"identifiers": {"$each": [{"kind": i.kind, "value": i.value} for i in identifiers]}}


def _values_projection(trait_keys: Iterable[str], *fields: str) -> Document:
    # The traits' values only (not their source and time), plus the named fields.
    projection: Document = {f"traits.{k}.value": 1 for k in trait_keys}
    projection.update(dict.fromkeys(fields, 1))
    return projection


def _values(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: t.get("value") for k, t in (doc.get("traits") or {}).items()}


def _trait_from_doc(doc: Mapping[str, Any]) -> TraitValue:
    return TraitValue(doc.get("value"), doc["observed_at"], doc["source"])


def profile_from_doc(doc: Mapping[str, Any]) -> Profile:
    """Returns the profile a stored document describes."""
    return Profile(
        id=doc["_id"],
        identifiers=[Identifier(i["kind"], i["value"]) for i in doc.get("identifiers", [])],
        traits={k: _trait_from_doc(v) for k, v in doc.get("traits", {}).items()},
        stats=doc.get("stats", {}),
        computed=doc.get("computed", {}),
        segments=list(doc.get("segments", [])),
        consent=doc.get("consent", {}),
        version=doc.get("version", 0),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        merged_into=doc.get("merged_into"),
    )


def observation_from_doc(doc: Mapping[str, Any]) -> Observation:
    """Returns the observation a history row records."""
    return Observation(
        key=doc["key"],
        value=doc.get("value"),
        observed_at=doc["observed_at"],
        source=doc["source"],
        origin=doc.get("origin", ""),
    )


@dataclass(frozen=True)
class TraitUpdate:
    """New current values for some traits of one profile, valid only at `expected_version`."""

    profile_id: str
    expected_version: int
    changed: Mapping[str, TraitValue]


@dataclass(frozen=True)
class HistoryRow:
    """A stored observation with its row id and when Kindred recorded it."""

    id: str
    profile_id: str
    observation: Observation
    recorded_at: datetime


class ProfileStore:
    """Reads and writes profiles, their trait history and the trait catalog."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.profiles = db[PROFILES]
        self.history = db[TRAIT_HISTORY]
        self.catalog = db[TRAIT_CATALOG]
        self._open_pages: dict[tuple[str, str | None], _OpenPage] = {}

    async def insert_profiles(
        self, entries: Sequence[tuple[str, Sequence[Identifier]]], *, now: datetime
    ) -> None:
        """Creates empty profiles with the given ids and identifiers, in one write."""
        if not entries:
            return
        await self.profiles.insert_many(
            [
                {
                    "_id": profile_id,
                    "identifiers": [{"kind": i.kind, "value": i.value} for i in identifiers],
                    "traits": {},
                    "stats": {},
                    "computed": {},
                    "segments": [],
                    "consent": {},
                    "version": 0,
                    "created_at": now,
                    "updated_at": now,
                    "merged_into": None,
                }
                for profile_id, identifiers in entries
            ],
            ordered=False,
        )

    async def ensure_profiles(self, profile_ids: Iterable[str], *, now: datetime) -> None:
        """Creates, empty and in one write, those of the profiles that do not exist yet."""
        ids = list(profile_ids)
        if not ids:
            return
        try:
            await self.insert_profiles([(pid, ()) for pid in ids], now=now)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    async def merged_into(self, profile_ids: Iterable[str]) -> dict[str, str]:
        """Returns, for those of the profiles that were merged away, their survivor."""
        return {
            doc["_id"]: doc["merged_into"]
            async for doc in self.profiles.find(
                {"_id": {"$in": list(set(profile_ids))}, "merged_into": {"$ne": None}},
                {"merged_into": 1},
            )
        }

    async def record_activity(
        self,
        changes: Mapping[str, tuple[Mapping[str, Any], Sequence[Identifier]]],
        *,
        now: datetime,
        session: AsyncClientSession | None = None,
    ) -> bool:
        """Applies stats updates and adds identifiers, one bulk write for every profile.

        Returns False, having changed only live profiles, if any was merged away
        meanwhile; in a transaction the caller then aborts and resolves again.
        """
        requests = []
        for profile_id, (stats_update, identifiers) in changes.items():
            update: Document = {k: dict(v) for k, v in stats_update.items()}
            update.setdefault("$set", {})["updated_at"] = now
            if identifiers:
                update["$addToSet"] = {
                    "identifiers": {
                        "$each": [{"kind": i.kind, "value": i.value} for i in identifiers]
                    }
                }
            requests.append(UpdateOne({"_id": profile_id, "merged_into": None}, update))
        if not requests:
            return True
        result = await self.profiles.bulk_write(requests, ordered=False, session=session)
        return result.matched_count == len(requests)

    async def set_stats(
        self, profile_id: str, stats: Mapping[str, Any], *, session: AsyncClientSession | None
    ) -> None:
        """Replaces a profile's stats, as recomputed from its events."""
        await self.profiles.update_one(
            {"_id": profile_id}, {"$set": {"stats": dict(stats)}}, session=session
        )

    async def tombstone(
        self, merged: str, survivor: str, *, now: datetime, session: AsyncClientSession
    ) -> bool:
        """Marks a profile as merged into a live survivor; returns False if that cannot be.

        Run in a transaction: writing both documents makes two opposite merges of
        the same pair conflict, so they can never point at each other.
        """
        # update_one, not find_one_and_update: SecantusDB serves the latter with a
        # collection scan (175 ms at 20k profiles), the former through `_id`.
        live = await self.profiles.update_one(
            {"_id": survivor, "merged_into": None}, {"$inc": {"version": 1}}, session=session
        )
        if live.matched_count == 0:
            return False
        done = await self.profiles.update_one(
            {"_id": merged, "merged_into": {"$in": [None, survivor]}},
            {"$set": {"merged_into": survivor, "updated_at": now}, "$inc": {"version": 1}},
            session=session,
        )
        return done.matched_count == 1

    async def move_history(
        self, from_profile: str, to_profile: str, *, session: AsyncClientSession
    ) -> int:
        """Moves a profile's trait history to its survivor; returns how many rows moved."""
        result = await self.history.update_many(
            {"profile_id": from_profile}, moved_rows(to_profile, from_profile), session=session
        )
        return result.modified_count

    async def give_back_history(
        self, merged: str, *, holder: str, session: AsyncClientSession
    ) -> int:
        """Gives an unmerged profile back the history it brought; returns how many rows."""
        result = await self.history.update_many(
            {"profile_id": holder, "merged_from": merged}, given_back_rows(merged), session=session
        )
        return result.modified_count

    async def move_event_history(
        self,
        event_ids: Sequence[str],
        *,
        from_profile: str,
        to_profile: str,
        session: AsyncClientSession,
    ) -> int:
        """Moves the observations the given events made from one profile to another."""
        if not event_ids:
            return 0
        result = await self.history.update_many(
            {"profile_id": from_profile, "origin": {"$in": [f"event:{e}" for e in event_ids]}},
            {"$set": {"profile_id": to_profile}},
            session=session,
        )
        return result.modified_count

    async def merge_sides(
        self, profile_ids: Iterable[str], *, session: AsyncClientSession | None = None
    ) -> dict[str, Document]:
        """Returns what merging needs of each existing profile: not its traits or stats."""
        projection = {
            "identifiers": 1,
            "segments": 1,
            "absorbed": 1,
            "apart_from": 1,
            "merged_into": 1,
            "created_at": 1,
        }
        return {
            doc["_id"]: doc
            async for doc in self.profiles.find(
                {"_id": {"$in": list(set(profile_ids))}}, projection, session=session
            )
        }

    async def absorb(
        self,
        survivor: str,
        *,
        merged: str,
        identifiers: Sequence[Mapping[str, Any]],
        lineage: Sequence[str],
        segments: Sequence[str],
        now: datetime,
        session: AsyncClientSession,
    ) -> None:
        """Gives a survivor the merged profile's identifiers, lineage and memberships."""
        await self.profiles.update_one(
            {"_id": survivor},
            {
                "$set": {"segments": list(segments), "updated_at": now},
                "$addToSet": {
                    "identifiers": {"$each": [dict(i) for i in identifiers]},
                    "absorbed": {"$each": [merged, *lineage]},
                },
            },
            session=session,
        )

    async def revive(
        self,
        merged: str,
        *,
        survivor: str,
        identifiers: Sequence[Identifier],
        segments: Sequence[str],
        now: datetime,
        session: AsyncClientSession,
    ) -> bool:
        """Makes a tombstone live again, kept apart from its former survivor."""
        result = await self.profiles.update_one(
            {"_id": merged, "merged_into": survivor},
            {
                "$set": {"merged_into": None, "segments": list(segments), "updated_at": now},
                "$addToSet": {
                    **_add_identifiers(identifiers),
                    "apart_from": survivor,
                },
                "$inc": {"version": 1},
            },
            session=session,
        )
        return result.matched_count == 1

    async def release(
        self,
        holders: Sequence[str],
        *,
        merged: str,
        lineage: Sequence[str],
        identifiers: Sequence[Identifier],
        segments: Sequence[str],
        now: datetime,
        session: AsyncClientSession,
    ) -> None:
        """Takes an unmerged profile's lineage and identifiers from its survivor chain.

        `holders` is the chain from the survivor to the live profile at its end,
        which gets the identifiers removed and the memberships given.
        """
        gone = [merged, *lineage]
        await self.profiles.update_many(
            {"_id": {"$in": list(holders)}},
            {"$pull": {"absorbed": {"$in": gone}}},
            session=session,
        )
        await self.profiles.update_one(
            {"_id": holders[0]}, {"$addToSet": {"apart_from": merged}}, session=session
        )
        update: Document = {"$set": {"segments": list(segments), "updated_at": now}}
        if identifiers:
            pulled = [{"kind": i.kind, "value": i.value} for i in identifiers]
            update["$pull"] = {"identifiers": {"$in": pulled}}
        update["$inc"] = {"version": 1}
        await self.profiles.update_one({"_id": holders[-1]}, update, session=session)

    async def set_apart(self, a: str, b: str, *, session: AsyncClientSession | None = None) -> None:
        """Records that two profiles are not the same person, on both."""
        await self.profiles.bulk_write(
            [
                UpdateOne({"_id": a}, {"$addToSet": {"apart_from": b}}),
                UpdateOne({"_id": b}, {"$addToSet": {"apart_from": a}}),
            ],
            session=session,
        )

    async def replace_traits(
        self,
        profile_id: str,
        traits: Mapping[str, TraitValue],
        *,
        expected_version: int,
        now: datetime,
        session: AsyncClientSession | None = None,
    ) -> bool:
        """Replaces all current traits if the profile is still at `expected_version`."""
        result = await self.profiles.update_one(
            {"_id": profile_id, "version": expected_version},
            {
                "$set": {
                    "traits": {k: _trait_doc(v) for k, v in traits.items()},
                    "updated_at": now,
                },
                "$inc": {"version": 1},
            },
            session=session,
        )
        return result.matched_count == 1

    async def get(
        self,
        profile_id: str,
        *,
        trait_keys: Iterable[str] | None = None,
        session: AsyncClientSession | None = None,
    ) -> Profile | None:
        """Returns the profile with that id, tombstones included; only `trait_keys` if given."""
        doc = await self.profiles.find_one(
            {"_id": profile_id}, profile_projection(trait_keys), session=session
        )
        return None if doc is None else profile_from_doc(doc)

    async def get_many(
        self, profile_ids: Iterable[str], *, trait_keys: Iterable[str] | None = None
    ) -> dict[str, Profile]:
        """Returns the profiles with those ids that exist, in one round trip.

        With `trait_keys`, only those traits are read.
        """
        ids = list(set(profile_ids))
        if not ids:
            return {}
        projection = profile_projection(trait_keys)
        return {
            doc["_id"]: profile_from_doc(doc)
            async for doc in self.profiles.find({"_id": {"$in": ids}}, projection)
        }

    async def current_traits(
        self, profile_ids: Iterable[str], keys: Iterable[str]
    ) -> dict[str, tuple[int, dict[str, TraitValue]]]:
        """Returns each existing profile's version and its current values of `keys`."""
        projection: Document = {"version": 1}
        projection.update({f"traits.{key}": 1 for key in keys})
        found: dict[str, tuple[int, dict[str, TraitValue]]] = {}
        async for doc in self.profiles.find({"_id": {"$in": list(profile_ids)}}, projection):
            traits = {k: _trait_from_doc(v) for k, v in doc.get("traits", {}).items()}
            found[doc["_id"]] = (doc.get("version", 0), traits)
        return found

    async def append_history(self, rows: Sequence[HistoryRow]) -> int:
        """Appends observations to history, skipping facts already recorded; returns how many."""
        if not rows:
            return 0
        docs = [
            {
                "_id": row.id,
                "profile_id": row.profile_id,
                "key": row.observation.key,
                "value": row.observation.value,
                "observed_at": row.observation.observed_at,
                "source": row.observation.source,
                "origin": row.observation.origin,
                "recorded_at": row.recorded_at,
            }
            for row in rows
        ]
        try:
            result = await self.history.insert_many(docs, ordered=False)
            return len(result.inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return int(exc.details.get("nInserted", 0))

    async def update_traits(self, updates: Sequence[TraitUpdate], *, now: datetime) -> bool:
        """Writes the updates in one bulk write; returns False if any profile moved on meanwhile."""
        if not updates:
            return True
        requests = []
        for update in updates:
            fields: Document = {f"traits.{k}": _trait_doc(v) for k, v in update.changed.items()}
            fields["updated_at"] = now
            requests.append(
                UpdateOne(
                    {"_id": update.profile_id, "version": update.expected_version},
                    {"$set": fields, "$inc": {"version": 1}},
                )
            )
        result = await self.profiles.bulk_write(requests, ordered=False)
        return result.matched_count == len(requests)

    async def history_for(
        self,
        profile_id: str,
        *,
        key: str | None = None,
        observed_until: datetime | None = None,
        recorded_until: datetime | None = None,
        session: AsyncClientSession | None = None,
    ) -> list[Observation]:
        """Returns a profile's recorded observations, optionally of one key or up to an instant."""
        query: Document = {"profile_id": profile_id}
        if key is not None:
            query["key"] = key
        if observed_until is not None:
            query["observed_at"] = {"$lte": observed_until}
        if recorded_until is not None:
            query["recorded_at"] = {"$lte": recorded_until}
        return [
            observation_from_doc(doc) async for doc in self.history.find(query, session=session)
        ]

    async def history_page(
        self, profile_id: str, key: str, *, first: int, after: tuple[datetime, str] | None
    ) -> list[HistoryRow]:
        """Returns up to `first` observations of one trait, newest first, after a cursor."""
        query: Document = {"profile_id": profile_id, "key": key}
        if after is not None:
            at, row_id = after
            query["$or"] = [
                {"observed_at": {"$lt": at}},
                {"observed_at": at, "_id": {"$lt": row_id}},
            ]
        cursor = self.history.find(query).sort([("observed_at", -1), ("_id", -1)]).limit(first)
        return [
            HistoryRow(doc["_id"], doc["profile_id"], observation_from_doc(doc), doc["recorded_at"])
            async for doc in cursor
        ]

    async def page(
        self,
        *,
        first: int,
        after: str | None,
        segment: str | None = None,
        has_trait: str | None = None,
        trait_keys: Sequence[str] | None = None,
    ) -> tuple[list[Profile], bool]:
        """Returns up to `first` live profiles in id order after `after`, and if more follow.

        With `trait_keys`, only those traits are read, which keeps wide pages cheap.
        A listing read page after page continues the same database cursor when this
        process still holds it, so a walk through every profile costs one query,
        not one per page; otherwise the page is a fresh `_id > after` query.
        """
        query: Document = {"merged_into": None}
        if segment is not None:
            query["segments"] = segment
        if has_trait is not None:
            query[f"traits.{has_trait}"] = {"$exists": True}
        projection = profile_projection(trait_keys)
        shape = repr((sorted(query.items()), projection))
        now = time.monotonic()
        await self._drop_expired(now)

        docs: list[Document] = []
        held = self._open_pages.pop((shape, after), None) if after is not None else None
        if held is not None:
            cursor, docs = held.cursor, [held.head]
        else:
            if after is not None:
                query["_id"] = {"$gt": after}
            cursor = self.profiles.find(query, projection).sort("_id", 1).batch_size(first + 1)
        docs += await cursor.to_list(first + 1 - len(docs))
        more = len(docs) > first
        page = docs[:first]
        if more:
            self._open_pages[(shape, page[-1]["_id"])] = _OpenPage(
                cursor, docs[first], now + PAGE_CURSOR_TTL_S
            )
            await self._bound_open_pages()
        else:
            await cursor.close()
        return [profile_from_doc(doc) for doc in page], more

    async def _drop_expired(self, now: float) -> None:
        for key in [k for k, v in self._open_pages.items() if v.expires_at < now]:
            await self._open_pages.pop(key).cursor.close()

    async def _bound_open_pages(self) -> None:
        while len(self._open_pages) > MAX_OPEN_PAGE_CURSORS:
            oldest = next(iter(self._open_pages))
            await self._open_pages.pop(oldest).cursor.close()

    async def count_by_traits(self, *trait_keys: str) -> dict[tuple[Any, ...], int]:
        """Returns how many live profiles hold each combination of the traits' values.

        Only profiles holding the first trait count. Keys are internal constants
        (`email_status`…), never user input.
        """
        first = f"traits.{trait_keys[0]}"
        group = {f"t{n}": f"$traits.{key}.value" for n, key in enumerate(trait_keys)}
        pipeline: list[Document] = [
            {"$match": {"merged_into": None, first: {"$exists": True}}},
            {"$group": {"_id": group, "n": {"$sum": 1}}},
        ]
        return {
            tuple(doc["_id"].get(f"t{n}") for n in range(len(trait_keys))): doc["n"]
            async for doc in await self.profiles.aggregate(pipeline)
        }

    async def match_inputs(
        self, profile_ids: Iterable[str], *, trait_keys: Iterable[str]
    ) -> dict[str, tuple[dict[str, Any], list[str]]]:
        """Returns live profiles' values of the traits, and their stored matching keys."""
        return {
            doc["_id"]: (_values(doc), doc.get("match_keys", []))
            async for doc in self.profiles.find(
                {"_id": {"$in": list(set(profile_ids))}, "merged_into": None},
                _values_projection(trait_keys, "match_keys"),
            )
        }

    async def set_match_keys(self, keys: Mapping[str, Sequence[str]]) -> None:
        """Stores each profile's matching keys, in one round trip."""
        if keys:
            await self.profiles.bulk_write(
                [
                    UpdateOne({"_id": pid}, {"$set": {"match_keys": list(k)}})
                    for pid, k in keys.items()
                ],
                ordered=False,
            )

    async def sharing_match_keys(
        self, keys: Iterable[str], *, trait_keys: Iterable[str], limit: int
    ) -> dict[str, tuple[dict[str, Any], list[str]]]:
        """Returns up to `limit` live profiles holding any of the keys, as `match_inputs` does."""
        wanted = list(set(keys))
        if not wanted:
            return {}
        projection = _values_projection(trait_keys, "match_keys", "merged_into")
        found: dict[str, tuple[dict[str, Any], list[str]]] = {}
        # Merged-away profiles are few; dropping them here keeps the query on one index.
        async for doc in self.profiles.find({"match_keys": {"$in": wanted}}, projection).limit(
            limit
        ):
            if doc.get("merged_into") is None:
                found[doc["_id"]] = (_values(doc), doc.get("match_keys", []))
        return found

    async def scan_live(
        self, *, trait_keys: Iterable[str], batch_size: int = 2000
    ) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
        """Yields every live profile's values of the traits, in batches, in id order."""
        projection = _values_projection(trait_keys, "merged_into")
        batch: list[tuple[str, dict[str, Any]]] = []
        # One cursor read in batches: the client never holds the whole collection.
        async for doc in self.profiles.find({}, projection, batch_size=batch_size):
            if doc.get("merged_into") is None:
                batch.append((doc["_id"], _values(doc)))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    async def search_names(
        self,
        text: str,
        *,
        name_keys: Sequence[str],
        given_keys: Sequence[str],
        surname_keys: Sequence[str],
        limit: int,
    ) -> list[Profile]:
        """Returns live profiles whose name traits have a word starting with the text, by id.

        "ada love" finds a `name` of "Ada Lovelace", and also a first name
        "Ada" with a last name "Lovelace…". Matching ignores case; the text is
        escaped, never read as a pattern. The keys are constants, never user input.
        """
        words = text.split()
        if not words:
            return []

        def starts(key: str, word: str) -> Document:
            return {f"traits.{key}.value": {"$regex": rf"(^|\s){re.escape(word)}", "$options": "i"}}

        whole = " ".join(words)
        either: list[Document] = [
            starts(k, whole) for k in (*name_keys, *given_keys, *surname_keys)
        ]
        if len(words) >= 2:
            given, surname = " ".join(words[:-1]), words[-1]
            either += [
                {"$and": [starts(g, given), starts(s, surname)]}
                for g in given_keys
                for s in surname_keys
            ]
        query = {"merged_into": None, "$or": either}
        cursor = self.profiles.find(query).sort("_id", 1).limit(limit)
        return [profile_from_doc(doc) async for doc in cursor]

    async def estimated_count(self) -> int:
        """Returns about how many profiles there are (merged-away ones included), cheaply."""
        return await self.profiles.estimated_document_count()

    async def catalog_entries(
        self, keys: Iterable[str] | None = None, *, session: AsyncClientSession | None = None
    ) -> dict[str, TraitDefinition]:
        """Returns the catalog's declarations, of the given keys or all of them."""
        query: Document = {} if keys is None else {"_id": {"$in": list(set(keys))}}
        return {
            doc["_id"]: TraitDefinition(
                key=doc["_id"],
                type=TraitType(doc["type"]),
                description=doc.get("description", ""),
                pii=bool(doc.get("pii", False)),
                precedence=tuple(doc["precedence"]) if doc.get("precedence") else None,
            )
            async for doc in self.catalog.find(query, session=session).sort("_id", 1)
        }

    async def put_catalog_entry(self, definition: TraitDefinition, *, now: datetime) -> None:
        """Creates or replaces the declaration of one trait."""
        await self.catalog.replace_one(
            {"_id": definition.key},
            {
                "type": definition.type.value,
                "description": definition.description,
                "pii": definition.pii,
                "precedence": list(definition.precedence) if definition.precedence else None,
                "updated_at": now,
            },
            upsert=True,
        )

    async def delete_catalog_entry(self, key: str) -> bool:
        """Removes one declaration; returns whether it existed."""
        result = await self.catalog.delete_one({"_id": key})
        return result.deleted_count == 1
