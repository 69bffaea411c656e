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
DUPLICATE_KEY = 11000

Document = dict[str, Any]

INDEXES = {
    IDENTITIES: [IndexModel([("profile_id", ASCENDING)], name="profile_id")],
}


class IdentityStore:
    """Maps identity keys (`kind:normalised value`) to the profile that holds them."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.identities = db[IDENTITIES]

    async def claim(self, claims: Mapping[str, str], *, now: datetime) -> dict[str, str]:
        """Links each unclaimed key to its profile in one write; returns every key's owner.

        The unique `_id` decides races: a key already claimed keeps its owner.
        """
        if not claims:
            return {}
        docs = [{"_id": key, "profile_id": pid, "linked_at": now} for key, pid in claims.items()]
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
