"""The scores' GraphQL types, served by a schema of their own over the real database."""

from typing import Any

import strawberry
from pymongo.asynchronous.database import AsyncDatabase

from profiles.scores import graphql as scores_graphql
from profiles.scores.service import ScoreService
from profiles.scores.store import ScoreStore
from tests.profiles.scores.seed import NOW, Db, seed_three_kinds


def _schema(db: AsyncDatabase[dict[str, Any]]) -> strawberry.Schema:
    # The same resolver bodies the app's Query uses.
    @strawberry.type
    class Query:
        @strawberry.field
        async def rfm_summary(self) -> scores_graphql.RfmSummaryType:
            return await scores_graphql.rfm_summary(ScoreStore(db))

        @strawberry.field
        async def clusters(
            self, run_id: strawberry.ID | None = None
        ) -> scores_graphql.ClusterRunType | None:
            return await scores_graphql.cluster_run(
                ScoreStore(db), None if run_id is None else str(run_id)
            )

    return strawberry.Schema(query=Query)


async def test_the_rfm_summary_counts_live_profiles_per_group(db: Db) -> None:
    await seed_three_kinds(db, per_kind=(4, 3, 2))
    await ScoreService(ScoreStore(db)).recompute_rfm(now=NOW)
    result = await _schema(db).execute(
        "{ rfmSummary { computedAt scored groups { group name profiles } } }"
    )
    assert result.errors is None
    assert result.data is not None
    summary = result.data["rfmSummary"]
    assert summary["computedAt"] == NOW.isoformat()
    assert summary["scored"] == 7
    groups = {g["group"]: (g["name"], g["profiles"]) for g in summary["groups"]}
    assert groups["NO_PURCHASES"] == ("No Purchases", 2)
    assert sum(n for _, n in groups.values()) == 9
    assert len(groups) == 12


async def test_clusters_show_the_latest_run_or_a_named_one(db: Db) -> None:
    await seed_three_kinds(db, per_kind=(10, 10, 10))
    service = ScoreService(ScoreStore(db))
    older = await service.recompute_clusters(now=NOW, k=2)
    newer = await service.recompute_clusters(now=NOW.replace(hour=13), k=3)
    query = """query ($run: ID) { clusters(runId: $run) {
        runId k seed silhouette profiles
        clusters { id label size description centroid { feature value z } } } }"""
    schema = _schema(db)
    latest = await schema.execute(query)
    named = await schema.execute(query, variable_values={"run": older.run_id})
    missing = await schema.execute(query, variable_values={"run": "run_none"})
    assert latest.errors is None
    assert named.errors is None
    assert latest.data is not None
    assert named.data is not None
    assert missing.data == {"clusters": None}
    assert latest.data["clusters"]["runId"] == newer.run_id
    assert [c["label"] for c in latest.data["clusters"]["clusters"]] == ["c1", "c2", "c3"]
    assert named.data["clusters"]["k"] == 2
    first = latest.data["clusters"]["clusters"][0]
    assert first["description"] == newer.clusters[0].description
    assert first["centroid"][0]["feature"] == "recency_days"
