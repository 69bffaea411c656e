"""`kindred scores rfm` and `kindred scores clusters` against the real database."""

from pymongo.asynchronous.database import AsyncDatabase

from profiles.scores.store import CLUSTERS
from profiles.store import PROFILES
from tests.fixtures.cli import run_kindred
from tests.profiles.scores.seed import profile_doc, seed_three_kinds

Db = AsyncDatabase[dict[str, object]]


def _rows(table: str) -> dict[str, str]:
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) >= 2 and cells[0]:
            rows[cells[0]] = cells[1]
    return rows


async def test_rfm_scores_every_live_profile_and_prints_the_groups(
    cli_env: dict[str, str], db: Db
) -> None:
    await seed_three_kinds(db, per_kind=(6, 4, 3))
    result = await run_kindred(cli_env, "scores", "rfm")
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows["profiles scored"] == "10"
    assert rows["profiles without orders"] == "3"
    assert rows["No Purchases"] == "3"
    assert sum(int(v) for k, v in rows.items() if k in _GROUPS) == 13
    scored = await db[PROFILES].count_documents({"computed.rfm_score.value": {"$type": "string"}})
    assert scored == 10


_GROUPS = {
    "Champions",
    "Loyal Customers",
    "Potential Loyalist",
    "New Customers",
    "Promising",
    "Need Attention",
    "About To Sleep",
    "At Risk",
    "Cannot Lose Them",
    "Hibernating",
    "Lost",
    "No Purchases",
}


async def test_clusters_with_a_fixed_k_label_profiles_and_describe_clusters(
    cli_env: dict[str, str], db: Db
) -> None:
    await seed_three_kinds(db, per_kind=(10, 10, 10))
    result = await run_kindred(cli_env, "scores", "clusters", "--k", "3", "--seed", "7")
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows["profiles clustered"] == "30"
    assert rows["k"] == "3"
    assert [rows["c1"], rows["c2"], rows["c3"]] == ["10", "10", "10"]
    assert "opens most emails" in result.stdout
    assert await db[CLUSTERS].count_documents({}) == 3
    labelled = await db[PROFILES].count_documents({"computed.cluster.value": "c1"})
    assert labelled == 10


async def test_clusters_refuse_a_fixed_k_with_a_range(cli_env: dict[str, str]) -> None:
    result = await run_kindred(cli_env, "scores", "clusters", "--k", "3", "--k-max", "5")
    assert result.returncode == 2
    assert "not both" in result.stderr


async def test_clusters_say_when_there_are_too_few_profiles(
    cli_env: dict[str, str], db: Db
) -> None:
    await db[PROFILES].insert_one(profile_doc("p1", {"event_count": 1, "last_seen": None}))
    result = await run_kindred(cli_env, "scores", "clusters")
    assert result.returncode == 1
    assert "needs at least 3 different profiles; there are 0" in result.stderr
