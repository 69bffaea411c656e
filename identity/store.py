"""The identity graph store: the only module of `identity` that talks to MongoDB."""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from profiles.models import Profile
from profiles.store import PROFILES, profile_from_doc, profile_projection

IDENTITIES = "identities"
MERGES = "merges"
DUPLICATE_KEY = 11000

Document = dict[str, Any]

INDEXES = {
    IDENTITIES: [
        IndexModel([("profile_id", ASCENDING), ("kind", ASCENDING)], name="profile_kind"),
    ],
    MERGES: [
        IndexModel([("survivor", ASCENDING)], name="survivor"),
        IndexModel([("merged", ASCENDING)], name="merged"),
        IndexModel([("status", ASCENDING)], name="status"),
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
        wanted = list(set(keys))
        if not wanted:
            return {}
        return {
            doc["_id"]: doc["profile_id"]
            async for doc in self.identities.find({"_id": {"$in": wanted}})
        }

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

    async def user_ids_of(self, profile_ids: Iterable[str]) -> dict[str, frozenset[str]]:
        """Returns the `user_id:…` keys each of the profiles holds (none: an empty set)."""
        ids = list(set(profile_ids))
        found: dict[str, set[str]] = {pid: set() for pid in ids}
        async for doc in self.identities.find(
            {"profile_id": {"$in": ids}, "kind": "user_id"}, {"profile_id": 1}
        ):
            found[doc["profile_id"]].add(doc["_id"])
        return {pid: frozenset(keys) for pid, keys in found.items()}

    async def repoint(self, from_profile: str, to_profile: str) -> int:
        """Moves every key of one profile to another; returns how many moved."""
        result = await self.identities.update_many(
            {"profile_id": from_profile}, {"$set": {"profile_id": to_profile}}
        )
        return result.modified_count

    async def keys_of(self, profile_id: str) -> list[str]:
        """Returns the keys a profile holds."""
        return [doc["_id"] async for doc in self.identities.find({"profile_id": profile_id})]

    async def start_merge(
        self, *, survivor: str, merged: str, cause: Mapping[str, Any], now: datetime
    ) -> str:
        """Records a merge about to happen (idempotently) and returns its id."""
        merge_id = f"mrg_{survivor}_{merged}"
        await self.merges.update_one(
            {"_id": merge_id},
            {
                "$setOnInsert": {
                    "survivor": survivor,
                    "merged": merged,
                    "cause": dict(cause),
                    "status": "started",
                    "started_at": now,
                }
            },
            upsert=True,
        )
        return merge_id

    async def finish_merge(self, merge_id: str, *, now: datetime, status: str = "done") -> None:
        """Marks a merge complete (`done`) or given up (`abandoned`)."""
        await self.merges.update_one(
            {"_id": merge_id}, {"$set": {"status": status, "finished_at": now}}
        )

    async def unfinished_merges(self) -> list[Document]:
        """Returns merges that a crash interrupted."""
        return [doc async for doc in self.merges.find({"status": "started"})]
