"""Clustering runs against the real database: reproducible labels, k by silhouette, storage."""

from datetime import timedelta

import pytest

from profiles.scores.clusters import NotEnoughProfiles
from profiles.scores.service import ScoreService
from profiles.scores.store import CLUSTERS, ScoreStore
from profiles.store import PROFILES
from tests.profiles.scores.seed import NOW, Db, profile_doc, seed_three_kinds


async def _labels(db: Db) -> dict[str, str]:
    return {
        doc["_id"]: doc["computed"]["cluster"]["value"]
        async for doc in db[PROFILES].find({"computed.cluster": {"$exists": True}})
    }


async def test_the_silhouette_finds_the_three_kinds_of_customer(db: Db) -> None:
    kinds = await seed_three_kinds(db)
    summary = await ScoreService(ScoreStore(db)).recompute_clusters(now=NOW, k_min=2, k_max=6)
    assert summary.k == 3
    assert set(summary.silhouettes) == {2, 3, 4, 5, 6}
    assert summary.silhouette == max(s for s in summary.silhouettes.values() if s is not None)
    labels = await _labels(db)
    # Each kind is exactly one cluster, named by revenue: spenders c1, readers c2, browsers c3.
    assert {(kinds[pid], label) for pid, label in labels.items()} == {
        ("spender", "c1"),
        ("reader", "c2"),
        ("browser", "c3"),
    }
    assert [(c.label, c.size) for c in summary.clusters] == [("c1", 70), ("c2", 65), ("c3", 65)]


async def test_the_same_data_and_seed_give_the_same_labels_and_sizes(db: Db) -> None:
    await seed_three_kinds(db)
    service = ScoreService(ScoreStore(db))
    first = await service.recompute_clusters(now=NOW, k=4, seed=3)
    first_labels = await _labels(db)
    second = await service.recompute_clusters(now=NOW + timedelta(minutes=5), k=4, seed=3)
    assert second.run_id != first.run_id
    assert await _labels(db) == first_labels
    assert second.clusters == first.clusters
    assert len(set(first_labels.values())) == 4


async def test_descriptions_name_what_sets_each_cluster_apart(db: Db) -> None:
    await seed_three_kinds(db)
    summary = await ScoreService(ScoreStore(db)).recompute_clusters(now=NOW, k=3)
    spenders, readers, browsers = (c.description for c in summary.clusters)
    assert "high spend" in spenders
    assert "high frequency" in spenders
    assert "mostly Electronics" in spenders
    assert "opens most emails" in readers
    assert "mostly Books" in readers
    assert "never ordered" in browsers
    assert "views many pages a day" in browsers


async def test_a_run_is_stored_per_cluster_and_each_profile_gets_its_label(db: Db) -> None:
    await seed_three_kinds(db)
    summary = await ScoreService(ScoreStore(db)).recompute_clusters(now=NOW, k=3)
    docs = [doc async for doc in db[CLUSTERS].find({"run_id": summary.run_id}).sort("label")]
    assert [(d["label"], d["size"], d["k"], d["profiles"]) for d in docs] == [
        ("c1", 70, 3, 200),
        ("c2", 65, 3, 200),
        ("c3", 65, 3, 200),
    ]
    assert docs[0]["_id"] == f"clu_{summary.run_id.removeprefix('run_')}_1"
    features = [f["feature"] for f in docs[0]["centroid"]]
    assert features[:6] == [
        "recency_days",
        "orders",
        "revenue",
        "email_open_rate",
        "email_click_rate",
        "session_depth",
    ]
    assert set(features[6:]) == {"category:Electronics", "category:Books", "category:Garden"}
    revenue = next(f for f in docs[0]["centroid"] if f["feature"] == "revenue")
    assert 800 <= revenue["value"] <= 2_000  # original units: currency, not cents or z
    profile = await db[PROFILES].find_one({"_id": "prf_00000"})
    assert profile is not None
    assert profile["computed"]["cluster"] == {
        "value": "c1",
        "computed_at": NOW,
        "run_id": summary.run_id,
    }
    stored = await ScoreStore(db).cluster_run()
    assert [c.description for c in stored] == [c.description for c in summary.clusters]


async def test_profiles_left_out_of_a_run_lose_their_old_label(db: Db) -> None:
    await seed_three_kinds(db)
    stale = {"value": "c9", "computed_at": NOW - timedelta(days=9), "run_id": "run_old"}
    await db[PROFILES].insert_many(
        [
            profile_doc("prf_quiet", {}, computed={"cluster": stale}),
            profile_doc("prf_gone", {}, computed={"cluster": stale}, merged_into="prf_00000"),
        ]
    )
    await ScoreService(ScoreStore(db)).recompute_clusters(now=NOW, k=3)
    quiet = await db[PROFILES].find_one({"_id": "prf_quiet"})
    gone = await db[PROFILES].find_one({"_id": "prf_gone"})
    assert quiet is not None
    assert gone is not None
    assert "cluster" not in quiet["computed"]
    assert gone["computed"]["cluster"] == stale  # tombstones are history; left alone


async def test_too_few_profiles_for_k_write_nothing(db: Db) -> None:
    await db[PROFILES].insert_many(
        [profile_doc(f"p{n}", {"event_count": 1, "last_seen": NOW, "orders": n}) for n in range(2)]
    )
    service = ScoreService(ScoreStore(db))
    with pytest.raises(NotEnoughProfiles, match="3 clusters need at least 3 different profiles"):
        await service.recompute_clusters(now=NOW, k=3)
    with pytest.raises(NotEnoughProfiles):
        await service.recompute_clusters(now=NOW)
    assert await db[CLUSTERS].count_documents({}) == 0
    assert await _labels(db) == {}


async def test_progress_covers_reading_clustering_and_writing(db: Db) -> None:
    await seed_three_kinds(db, per_kind=(10, 10, 10))
    seen: list[tuple[str, int, int | None]] = []
    await ScoreService(ScoreStore(db)).recompute_clusters(
        now=NOW, k_min=2, k_max=4, progress=lambda s, d, t: seen.append((s, d, t))
    )
    assert seen[0] == ("reading profiles and events", 0, None)
    assert ("clustering", 3, 3) in seen
    assert seen[-1] == ("writing labels", 30, 30)
