"""Recomputing scores: RFM over all ordering profiles, and behavioural clusters."""

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from profiles.ids import new_id
from profiles.scores import clusters as clustering
from profiles.scores.rfm import RfmGroup, RfmScore
from profiles.scores.store import ScoreStore

Progress = Callable[[str, int, int | None], None]  # stage, done, total (None: unknown)

WRITE_BATCH = 1_000  # profiles per bulk write


def _silent(_stage: str, _done: int, _total: int | None) -> None:
    return None


@dataclass(frozen=True)
class RfmSummary:
    """What one RFM recompute did."""

    computed_at: datetime
    scored: int  # live profiles with an order, scored
    no_purchases: int  # live profiles without an order
    groups: Mapping[RfmGroup, int]  # every group, No Purchases included, zeros too
    changed: int  # scored profiles whose group is not the one they had
    seconds: float


@dataclass(frozen=True)
class ClusterInfo:
    """One cluster of a run, as a summary shows it."""

    label: str
    size: int
    description: str


@dataclass(frozen=True)
class ClusterSummary:
    """What one clustering run found."""

    run_id: str
    k: int
    silhouette: float | None
    silhouettes: Mapping[int, float | None]  # per k tried
    clusters: tuple[ClusterInfo, ...]
    profiles: int
    features: tuple[str, ...]
    seconds: float


class ScoreService:
    """Recomputes RFM scores and clusters and stores them as computed traits."""

    def __init__(self, store: ScoreStore) -> None:
        self.store = store

    async def recompute_rfm(self, *, now: datetime, progress: Progress | None = None) -> RfmSummary:
        """Scores every live profile with an order and names its group; safe to run again."""
        report = progress or _silent
        started = time.perf_counter()
        report("ranking", 0, None)
        groups: Counter[RfmGroup] = Counter()
        scored = changed = 0
        batch: list[RfmScore] = []
        total: int | None = None
        async for row in self.store.rfm_scores(now=now):
            total = row.scored
            group = row.score.group
            groups[group] += 1
            changed += row.previous_group != group.value
            batch.append(row.score)
            if len(batch) >= WRITE_BATCH:
                await self.store.write_rfm(batch, now=now)
                scored += len(batch)
                batch = []
                report("writing scores", scored, total)
        await self.store.write_rfm(batch, now=now)
        scored += len(batch)
        report("writing scores", scored, total or 0)
        report("marking profiles without orders", 0, None)
        no_purchases = await self.store.mark_no_purchases(now=now)
        groups[RfmGroup.NO_PURCHASES] = no_purchases
        return RfmSummary(
            computed_at=now,
            scored=scored,
            no_purchases=no_purchases,
            groups={group: groups[group] for group in RfmGroup},
            changed=changed,
            seconds=time.perf_counter() - started,
        )

    async def recompute_clusters(
        self,
        *,
        now: datetime,
        k: int | None = None,
        k_min: int = clustering.DEFAULT_K_MIN,
        k_max: int = clustering.DEFAULT_K_MAX,
        seed: int = clustering.DEFAULT_SEED,
        categories: int = clustering.DEFAULT_CATEGORIES,
        progress: Progress | None = None,
    ) -> ClusterSummary:
        """Clusters live profiles with events, stores the run and labels each profile.

        k is `k` if given, else the best by silhouette in `k_min..k_max`. Raises
        `NotEnoughProfiles` before writing anything if the data cannot give k clusters.
        """
        report = progress or _silent
        started = time.perf_counter()
        report("reading profiles and events", 0, None)
        activities = await self.store.activity()
        names = clustering.top_categories(activities, categories)
        found = await asyncio.to_thread(clustering.features, activities, now=now, categories=names)
        z = await asyncio.to_thread(clustering.standardise, found)
        distinct = await asyncio.to_thread(clustering.distinct_rows, z)
        ks = clustering.candidate_ks(distinct, k=k, k_min=k_min, k_max=k_max)
        fits: list[clustering.Fit] = []
        report("clustering", 0, len(ks))
        for candidate in ks:
            # One k per thread call, so progress is reported from the event loop.
            fits.append(await asyncio.to_thread(clustering.fit, z, candidate, seed=seed))
            report("clustering", len(fits), len(ks))
        chosen = clustering.best(fits)
        named = await asyncio.to_thread(clustering.name_clusters, found, z, chosen)
        run_id = new_id("run", now_ms=int(now.timestamp() * 1000))
        await self.store.save_run(
            named,
            run_id=run_id,
            feature_names=found.names,
            k=chosen.k,
            seed=seed,
            silhouette=chosen.silhouette,
            now=now,
        )
        labels = [(member, c.label) for c in named for member in c.members]
        labels.sort()
        total = len(labels)
        report("writing labels", 0, total)
        for start in range(0, total, WRITE_BATCH):
            chunk = labels[start : start + WRITE_BATCH]
            await self.store.write_labels(chunk, run_id=run_id, now=now)
            report("writing labels", start + len(chunk), total)
        await self.store.clear_other_labels(run_id=run_id)
        return ClusterSummary(
            run_id=run_id,
            k=chosen.k,
            silhouette=chosen.silhouette,
            silhouettes={f.k: f.silhouette for f in fits},
            clusters=tuple(ClusterInfo(c.label, c.size, c.description) for c in named),
            profiles=len(found.profile_ids),
            features=found.names,
            seconds=time.perf_counter() - started,
        )
