"""GraphQL types for RFM groups and clusters; the app adds the root fields to its schema."""

from datetime import datetime

import strawberry

from profiles.scores.rfm import RfmGroup
from profiles.scores.store import ScoreStore, StoredCluster

RfmGroupType = strawberry.enum(RfmGroup, name="RfmGroup", description="A named RFM group.")


@strawberry.type(name="RfmGroupCount", description="How many live profiles are in one RFM group.")
class RfmGroupCountType:
    group: RfmGroupType  # type: ignore[valid-type]
    name: str = strawberry.field(description="The group's name, as `computed.rfm_group` holds it.")
    profiles: int


@strawberry.type(name="RfmSummary", description="Live profiles per RFM group, as last computed.")
class RfmSummaryType:
    computed_at: datetime | None = strawberry.field(
        description="When the newest group was computed; null if RFM never ran."
    )
    scored: int = strawberry.field(description="Live profiles with an order, hence scores.")
    groups: list[RfmGroupCountType] = strawberry.field(
        description="Every group, No Purchases last, zeros included."
    )


@strawberry.type(name="ClusterFeature", description="One feature of a cluster's centroid.")
class ClusterFeatureType:
    feature: str = strawberry.field(
        description="`recency_days`, `orders`, `revenue`, `email_open_rate`, `email_click_rate`, "
        "`session_depth`, or `category:<name>` (share of product events)."
    )
    value: float = strawberry.field(description="The members' mean, in the feature's own units.")
    z: float = strawberry.field(description="The members' mean z-score: distance from everyone.")


@strawberry.type(name="Cluster", description="A behavioural cluster of one clustering run.")
class ClusterType:
    id: strawberry.ID
    label: str = strawberry.field(description="c1…ck, most revenue first; `computed.cluster`.")
    size: int
    description: str = strawberry.field(description="What sets the cluster apart, in words.")
    centroid: list[ClusterFeatureType]

    @classmethod
    def of(cls, cluster: StoredCluster) -> "ClusterType":
        return cls(
            id=strawberry.ID(cluster.id),
            label=cluster.label,
            size=cluster.size,
            description=cluster.description,
            centroid=[
                ClusterFeatureType(feature=f["feature"], value=f["value"], z=f["z"])
                for f in cluster.centroid
            ],
        )


@strawberry.type(name="ClusterRun", description="One clustering run and its clusters.")
class ClusterRunType:
    run_id: strawberry.ID
    created_at: datetime
    k: int
    seed: int
    silhouette: float | None = strawberry.field(
        description="Mean silhouette of the chosen clustering (-1 to 1, higher is better)."
    )
    profiles: int = strawberry.field(description="Profiles clustered.")
    clusters: list[ClusterType]


async def rfm_summary(store: ScoreStore) -> RfmSummaryType:
    """Returns live profiles counted per RFM group."""
    counts, computed_at = await store.rfm_counts()
    groups = [
        RfmGroupCountType(group=group, name=group.value, profiles=counts.get(group.value, 0))
        for group in RfmGroup
    ]
    scored = sum(g.profiles for g in groups if g.group is not RfmGroup.NO_PURCHASES)
    return RfmSummaryType(computed_at=computed_at, scored=scored, groups=groups)


async def cluster_run(store: ScoreStore, run_id: str | None = None) -> ClusterRunType | None:
    """Returns the latest clustering run, or the named one; None if there is none."""
    found = await store.cluster_run(run_id)
    if not found:
        return None
    first = found[0]
    return ClusterRunType(
        run_id=strawberry.ID(first.run_id),
        created_at=first.created_at,
        k=first.k,
        seed=first.seed,
        silhouette=first.silhouette,
        profiles=first.profiles,
        clusters=[ClusterType.of(c) for c in found],
    )
