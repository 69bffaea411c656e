"""The scores store: the only module of `profiles.scores` that talks to MongoDB.

It ranks RFM in one aggregation, writes computed traits in bulk, reads what
clustering needs (profile stats, and one aggregation over the event log), and
keeps the `clusters` collection.
"""

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from profiles.scores.clusters import Activity, Cluster, clean_category
from profiles.scores.rfm import QUINTILES, RfmGroup, RfmScore
from profiles.stats import ORDER_COMPLETED, encode_name
from profiles.store import PROFILES

Document = dict[str, Any]

CLUSTERS = "clusters"
# Written by the app's ingest and read here only, for the category mix and active days.
EVENTS = "events"

EMAIL_DELIVERED = "Email Delivered"
PRODUCT_EVENTS = ("Product Viewed", "Product Added", ORDER_COMPLETED)
RFM_KEYS = ("rfm_recency", "rfm_frequency", "rfm_monetary", "rfm_score", "rfm_group")
CLUSTER_KEY = "cluster"
_DAY_MS = 86_400_000

INDEXES = {
    CLUSTERS: [
        IndexModel([("run_id", ASCENDING)], name="run_id"),
        IndexModel([("created_at", DESCENDING)], name="created_at"),
    ],
}

_LIVE: Document = {"merged_into": None}


def _computed(value: Any, now: datetime, **extra: Any) -> Document:
    return {"value": value, "computed_at": now, **extra}


def _quintile_expression(rank_field: str) -> Document:
    # rfm.quintile in the database: 1 + floor(5 × (rank − 1) / n).
    return {
        "$toInt": {
            "$add": [
                1,
                {
                    "$floor": {
                        "$divide": [
                            {"$multiply": [QUINTILES, {"$subtract": [f"${rank_field}", 1]}]},
                            "$n",
                        ]
                    }
                },
            ]
        }
    }


def rfm_pipeline(now: datetime) -> list[Document]:
    """Returns the aggregation that scores every live profile with an order.

    `$rank` gives tied values the same rank, one more than the number of
    profiles strictly worse; each stage sorts worst first on one measure.
    """
    return [
        {
            "$match": {
                **_LIVE,
                "stats.orders": {"$gte": 1},
                "stats.last_order_at": {"$type": "date"},
            }
        },
        {
            "$project": {
                "days": {
                    "$max": [
                        0,
                        {
                            "$floor": {
                                "$divide": [{"$subtract": [now, "$stats.last_order_at"]}, _DAY_MS]
                            }
                        },
                    ]
                },
                "orders": "$stats.orders",
                "cents": {"$ifNull": ["$stats.revenue_cents", 0]},
                "previous": "$computed.rfm_group.value",
            }
        },
        {"$setWindowFields": {"sortBy": {"days": -1}, "output": {"r_rank": {"$rank": {}}}}},
        {"$setWindowFields": {"sortBy": {"orders": 1}, "output": {"f_rank": {"$rank": {}}}}},
        {
            "$setWindowFields": {
                "sortBy": {"cents": 1},
                "output": {
                    "m_rank": {"$rank": {}},
                    "n": {"$count": {}, "window": {"documents": ["unbounded", "unbounded"]}},
                },
            }
        },
        {
            "$project": {
                "previous": 1,
                "n": 1,
                "r": _quintile_expression("r_rank"),
                "f": _quintile_expression("f_rank"),
                "m": _quintile_expression("m_rank"),
            }
        },
    ]


def _product_categories() -> Document:
    # A product event's categories: `properties.category`, else each of `properties.products`.
    # `$map` rather than the path "$properties.products.category": SecantusDB 0.7
    # does not resolve a path through an array inside an expression.
    from_products = {
        "$filter": {
            "input": {
                "$map": {"input": "$properties.products", "as": "item", "in": "$$item.category"}
            },
            "as": "c",
            "cond": {"$eq": [{"$type": "$$c"}, "string"]},
        }
    }
    return {
        "$cond": [
            {"$and": [{"$eq": ["$type", "track"]}, {"$in": ["$event", list(PRODUCT_EVENTS)]}]},
            {
                "$cond": [
                    {"$eq": [{"$type": "$properties.category"}, "string"]},
                    ["$properties.category"],
                    {"$cond": [{"$isArray": "$properties.products"}, from_products, []]},
                ]
            },
            [],
        ]
    }


def events_pipeline() -> list[Document]:
    """Returns the aggregation of each profile's active days and product events per category."""
    return [
        {"$match": {"status": "applied", "profile_id": {"$ne": None}}},
        {
            "$project": {
                "_id": 0,
                "p": "$profile_id",
                "d": {"$dateToString": {"format": "%Y-%m-%d", "date": "$timestamp"}},
                "c": _product_categories(),
            }
        },
        {"$unwind": {"path": "$c", "preserveNullAndEmptyArrays": True}},
        {"$group": {"_id": {"p": "$p", "d": "$d", "c": "$c"}, "n": {"$sum": 1}}},
        {
            "$group": {
                "_id": "$_id.p",
                "days": {"$addToSet": "$_id.d"},
                "cats": {"$push": {"c": "$_id.c", "n": "$n"}},
            }
        },
        {"$project": {"active_days": {"$size": "$days"}, "cats": 1}},
    ]


@dataclass(frozen=True)
class ScoredProfile:
    """One profile's new RFM scores, its group before, and how many profiles were scored."""

    score: RfmScore
    previous_group: str | None
    scored: int


@dataclass(frozen=True)
class StoredCluster:
    """A cluster as stored: one run's named cluster with its run's figures."""

    id: str
    run_id: str
    label: str
    size: int
    description: str
    centroid: list[Document]  # [{feature, value, z}], in feature order
    created_at: datetime
    k: int
    seed: int
    silhouette: float | None
    profiles: int


def _stored_cluster(doc: Mapping[str, Any]) -> StoredCluster:
    return StoredCluster(
        id=doc["_id"],
        run_id=doc["run_id"],
        label=doc["label"],
        size=doc["size"],
        description=doc["description"],
        centroid=list(doc["centroid"]),
        created_at=doc["created_at"],
        k=doc["k"],
        seed=doc["seed"],
        silhouette=doc.get("silhouette"),
        profiles=doc["profiles"],
    )


class ScoreStore:
    """Reads what scores need and writes them to profiles and `clusters`."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.profiles = db[PROFILES]
        self.events = db[EVENTS]
        self.clusters = db[CLUSTERS]

    async def rfm_scores(self, *, now: datetime) -> AsyncIterator[ScoredProfile]:
        """Yields every live ordering profile's scores, ranked in one aggregation."""
        cursor = await self.profiles.aggregate(rfm_pipeline(now), allowDiskUse=True)
        async for doc in cursor:
            yield ScoredProfile(
                score=RfmScore(doc["_id"], recency=doc["r"], frequency=doc["f"], monetary=doc["m"]),
                previous_group=doc.get("previous"),
                scored=doc["n"],
            )

    async def write_rfm(self, scores: Sequence[RfmScore], *, now: datetime) -> int:
        """Stores the scores as computed traits in one bulk write; returns how many matched.

        A profile merged away since it was scored is left alone.
        """
        if not scores:
            return 0
        requests = [
            UpdateOne(
                {"_id": s.profile_id, **_LIVE},
                {
                    "$set": {
                        "computed.rfm_recency": _computed(s.recency, now),
                        "computed.rfm_frequency": _computed(s.frequency, now),
                        "computed.rfm_monetary": _computed(s.monetary, now),
                        "computed.rfm_score": _computed(s.code, now),
                        "computed.rfm_group": _computed(s.group.value, now),
                    }
                },
            )
            for s in scores
        ]
        result = await self.profiles.bulk_write(requests, ordered=False)
        return result.matched_count

    async def mark_no_purchases(self, *, now: datetime) -> int:
        """Puts live profiles without an order in "No Purchases", unscored; returns how many."""
        result = await self.profiles.update_many(
            {**_LIVE, "stats.orders": {"$not": {"$gte": 1}}},
            {
                "$set": {"computed.rfm_group": _computed(RfmGroup.NO_PURCHASES.value, now)},
                "$unset": {f"computed.{key}": "" for key in RFM_KEYS if key != "rfm_group"},
            },
        )
        return result.matched_count

    async def rfm_counts(self) -> tuple[dict[str, int], datetime | None]:
        """Returns live profiles per stored RFM group, and when the newest group was computed."""
        pipeline: list[Document] = [
            {"$match": {**_LIVE, "computed.rfm_group.value": {"$type": "string"}}},
            {
                "$group": {
                    "_id": "$computed.rfm_group.value",
                    "n": {"$sum": 1},
                    "at": {"$max": "$computed.rfm_group.computed_at"},
                }
            },
        ]
        counts: dict[str, int] = {}
        latest: datetime | None = None
        async for doc in await self.profiles.aggregate(pipeline):
            counts[doc["_id"]] = doc["n"]
            if doc["at"] is not None and (latest is None or doc["at"] > latest):
                latest = doc["at"]
        return counts, latest

    async def activity(self) -> list[Activity]:
        """Returns what clustering reads of every live profile with events, in id order."""
        per_profile: dict[str, tuple[int, dict[str, int]]] = {}
        async for doc in await self.events.aggregate(events_pipeline(), allowDiskUse=True):
            categories: dict[str, int] = {}
            for entry in doc["cats"]:
                name = clean_category(entry.get("c"))
                if name is not None:
                    categories[name] = categories.get(name, 0) + entry["n"]
            per_profile[doc["_id"]] = (doc["active_days"], categories)
        delivered = encode_name(EMAIL_DELIVERED)
        projection = {
            "stats.last_seen": 1,
            "stats.orders": 1,
            "stats.revenue_cents": 1,
            "stats.email_opens": 1,
            "stats.email_clicks": 1,
            "stats.page_views": 1,
            "stats.screen_views": 1,
            f"stats.event_counts.{delivered}": 1,
        }
        found: list[Activity] = []
        query = {**_LIVE, "stats.event_count": {"$gte": 1}, "stats.last_seen": {"$type": "date"}}
        async for doc in self.profiles.find(query, projection).sort("_id", ASCENDING):
            stats = doc["stats"]
            days, categories = per_profile.get(doc["_id"], (0, {}))
            found.append(
                Activity(
                    profile_id=doc["_id"],
                    last_seen=stats["last_seen"],
                    orders=stats.get("orders", 0),
                    revenue_cents=stats.get("revenue_cents", 0),
                    email_opens=stats.get("email_opens", 0),
                    email_clicks=stats.get("email_clicks", 0),
                    emails_delivered=stats.get("event_counts", {}).get(delivered, 0),
                    views=stats.get("page_views", 0) + stats.get("screen_views", 0),
                    active_days=days,
                    categories=categories,
                )
            )
        return found

    async def save_run(
        self,
        clusters: Sequence[Cluster],
        *,
        run_id: str,
        feature_names: Sequence[str],
        k: int,
        seed: int,
        silhouette: float | None,
        now: datetime,
    ) -> None:
        """Stores one clustering run: a document per cluster, in one write."""
        profiles = sum(c.size for c in clusters)
        await self.clusters.insert_many(
            [
                {
                    "_id": f"clu_{run_id.removeprefix('run_')}_{n}",
                    "run_id": run_id,
                    "label": c.label,
                    "size": c.size,
                    "description": c.description,
                    # A list, not a mapping: category names are user data, never field names.
                    "centroid": [
                        {"feature": name, "value": c.centroid[name], "z": c.z[name]}
                        for name in feature_names
                    ],
                    "created_at": now,
                    "k": k,
                    "seed": seed,
                    "silhouette": silhouette,
                    "profiles": profiles,
                }
                for n, c in enumerate(clusters, start=1)
            ]
        )

    async def write_labels(
        self, labels: Sequence[tuple[str, str]], *, run_id: str, now: datetime
    ) -> int:
        """Stores (profile id, label) pairs as the `cluster` computed trait, in one bulk write."""
        if not labels:
            return 0
        result = await self.profiles.bulk_write(
            [
                UpdateOne(
                    {"_id": profile_id, **_LIVE},
                    {"$set": {f"computed.{CLUSTER_KEY}": _computed(label, now, run_id=run_id)}},
                )
                for profile_id, label in labels
            ],
            ordered=False,
        )
        return result.matched_count

    async def clear_other_labels(self, *, run_id: str) -> int:
        """Removes the cluster label of live profiles this run did not label; returns how many."""
        result = await self.profiles.update_many(
            {
                **_LIVE,
                f"computed.{CLUSTER_KEY}": {"$exists": True},
                f"computed.{CLUSTER_KEY}.run_id": {"$ne": run_id},
            },
            {"$unset": {f"computed.{CLUSTER_KEY}": ""}},
        )
        return result.modified_count

    async def cluster_run(self, run_id: str | None = None) -> list[StoredCluster]:
        """Returns a run's clusters in label order: the latest run's, or the named one's."""
        if run_id is None:
            latest = await self.clusters.find_one(
                {}, {"run_id": 1}, sort=[("created_at", DESCENDING), ("run_id", DESCENDING)]
            )
            if latest is None:
                return []
            run_id = latest["run_id"]
        found = [_stored_cluster(doc) async for doc in self.clusters.find({"run_id": run_id})]
        return sorted(found, key=lambda c: int(c.label.removeprefix("c")))
