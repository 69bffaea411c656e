"""RFM recomputed in the database, against the real server, on a hand-checked fixture."""

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.scores.rfm import RfmGroup, RfmInput, score_all
from profiles.scores.service import ScoreService
from profiles.scores.store import ScoreStore
from profiles.store import PROFILES
from tests.fixtures.events import builder_for, drain, event
from tests.profiles.scores.seed import NOW, Db, order_stats, profile_doc

# id: (days since the last order, orders, revenue in cents) → expected code and group.
# Ranks among 10: scores are 1 + floor((rank − 1) / 2); tied values share the lowest rank.
FIXTURE: dict[str, tuple[float, int, int, str, RfmGroup]] = {
    "p01": (1, 12, 120_000, "555", RfmGroup.CHAMPIONS),
    "p02": (2, 1, 1_000, "511", RfmGroup.NEW_CUSTOMERS),
    # p03 and p04 ordered 7 whole days ago: same recency rank (7), R = 4.
    "p03": (7 + 1 / 24, 5, 25_000, "444", RfmGroup.LOYAL_CUSTOMERS),
    "p04": (7 + 20 / 24, 1, 1_200, "411", RfmGroup.PROMISING),
    "p05": (30, 3, 9_000, "333", RfmGroup.NEED_ATTENTION),
    "p06": (45, 2, 3_000, "322", RfmGroup.ABOUT_TO_SLEEP),
    "p07": (120, 9, 90_000, "255", RfmGroup.CANNOT_LOSE_THEM),
    # p08 and p09 spent the same: monetary rank 4 for both, M = 2.
    "p08": (150, 2, 4_500, "222", RfmGroup.HIBERNATING),
    "p09": (400, 1, 4_500, "112", RfmGroup.LOST),
    "p10": (380, 4, 20_000, "144", RfmGroup.AT_RISK),
}


async def _seed_fixture(db: Db) -> None:
    docs = [
        profile_doc(pid, order_stats(days=days, orders=orders, cents=cents))
        for pid, (days, orders, cents, _, _) in FIXTURE.items()
    ]
    browsing = {"event_count": 3, "page_views": 3, "last_seen": NOW}
    stale = {"value": 3, "computed_at": NOW - timedelta(days=1)}
    docs += [
        # Never ordered, and still carries scores from before an unmerge.
        profile_doc("p11", browsing, computed={"rfm_recency": stale, "cluster": stale}),
        # Merged away: neither scored nor counted.
        profile_doc("p12", order_stats(days=1, orders=50, cents=9_999_999), merged_into="p01"),
    ]
    await db[PROFILES].insert_many(docs)


async def test_scores_and_groups_match_the_hand_checked_fixture(db: Db) -> None:
    await _seed_fixture(db)
    summary = await ScoreService(ScoreStore(db)).recompute_rfm(now=NOW)

    computed = {doc["_id"]: doc["computed"] async for doc in db[PROFILES].find()}
    for pid, (_, _, _, code, group) in FIXTURE.items():
        r, f, m = (int(c) for c in code)
        assert computed[pid] == {
            "rfm_recency": {"value": r, "computed_at": NOW},
            "rfm_frequency": {"value": f, "computed_at": NOW},
            "rfm_monetary": {"value": m, "computed_at": NOW},
            "rfm_score": {"value": code, "computed_at": NOW},
            "rfm_group": {"value": group.value, "computed_at": NOW},
        }, pid
    assert summary.scored == 10
    assert summary.groups[RfmGroup.CHAMPIONS] == 1
    assert summary.groups[RfmGroup.POTENTIAL_LOYALIST] == 0
    assert summary.groups[RfmGroup.NO_PURCHASES] == 1


async def test_profiles_without_orders_are_no_purchases_and_unscored(db: Db) -> None:
    await _seed_fixture(db)
    await ScoreService(ScoreStore(db)).recompute_rfm(now=NOW)
    prospect = await db[PROFILES].find_one({"_id": "p11"})
    merged = await db[PROFILES].find_one({"_id": "p12"})
    assert prospect is not None
    assert merged is not None
    assert prospect["computed"]["rfm_group"] == {"value": "No Purchases", "computed_at": NOW}
    assert "rfm_recency" not in prospect["computed"]
    assert "cluster" in prospect["computed"]  # other computed traits are left alone
    assert merged["computed"] == {}


async def test_recomputing_refreshes_computed_at_and_counts_changes(db: Db) -> None:
    await _seed_fixture(db)
    service = ScoreService(ScoreStore(db))
    first = await service.recompute_rfm(now=NOW)
    later = NOW + timedelta(hours=1)
    again = await service.recompute_rfm(now=later)
    assert first.changed == 10
    assert again.changed == 0
    assert again.groups == first.groups
    doc = await db[PROFILES].find_one({"_id": "p05"})
    assert doc is not None
    assert doc["computed"]["rfm_score"] == {"value": "333", "computed_at": later}


async def test_progress_reports_every_profile_written(db: Db) -> None:
    await _seed_fixture(db)
    seen: list[tuple[str, int, int | None]] = []
    await ScoreService(ScoreStore(db)).recompute_rfm(
        now=NOW, progress=lambda stage, done, total: seen.append((stage, done, total))
    )
    assert ("writing scores", 10, 10) in seen


async def test_an_empty_database_scores_nobody(db: Db) -> None:
    summary = await ScoreService(ScoreStore(db)).recompute_rfm(now=NOW)
    assert summary.scored == 0
    assert set(summary.groups.values()) == {0}


async def test_orders_applied_by_the_builder_are_scored(db: Db) -> None:
    def order(user: str, at: float, revenue: float) -> dict[str, Any]:
        return event(
            "track", user_id=user, at=at, event="Order Completed", properties={"revenue": revenue}
        )

    await db["events"].insert_many(
        [
            order("big", 0, 500),
            order("big", 10, 250.5),
            order("small", 1, 9.99),
            event("page", user_id="looker", at=2, name="Home"),
        ]
    )
    await drain(builder_for(db))
    summary = await ScoreService(ScoreStore(db)).recompute_rfm(now=NOW)
    assert summary.scored == 2
    assert summary.no_purchases == 1
    scores = {
        doc["stats"]["revenue_cents"]: doc["computed"]["rfm_score"]["value"]
        async for doc in db[PROFILES].find({"stats.orders": {"$gte": 1}})
    }
    # Two customers: the worse ranks 1 (score 1), the better 2 (score 3). Both last
    # ordered 92 whole days before NOW, nine hours apart: a tie, so R = 1 for both.
    assert scores == {75_050: "133", 999: "111"}


_inputs = st.dictionaries(
    st.from_regex(r"p[0-9]{3}", fullmatch=True),
    st.builds(
        RfmInput,
        days_since_order=st.integers(0, 40),
        orders=st.integers(1, 6),
        revenue_cents=st.integers(0, 8).map(lambda n: n * 1_000),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(inputs=_inputs)
async def test_the_database_scores_as_the_python_rules_do(
    db: Db, inputs: dict[str, RfmInput]
) -> None:
    await db[PROFILES].delete_many({})
    await db[PROFILES].insert_many(
        [
            profile_doc(
                pid,
                # Whole days plus some hours: recency counts whole days only.
                order_stats(days=i.days_since_order + 0.3, orders=i.orders, cents=i.revenue_cents),
            )
            for pid, i in inputs.items()
        ]
    )
    rows = [row async for row in ScoreStore(db).rfm_scores(now=NOW)]
    assert {row.score.profile_id: row.score for row in rows} == score_all(inputs)


@pytest.mark.parametrize("orders", [0, None])
async def test_a_profile_with_no_order_count_is_no_purchases(db: Db, orders: int | None) -> None:
    stats: dict[str, Any] = {"event_count": 1, "last_seen": NOW}
    if orders is not None:
        stats["orders"] = orders
    await db[PROFILES].insert_one(profile_doc("p1", stats))
    summary = await ScoreService(ScoreStore(db)).recompute_rfm(now=NOW)
    assert summary.no_purchases == 1
