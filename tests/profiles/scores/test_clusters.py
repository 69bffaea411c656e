"""Clustering rules with no I/O: features, standardisation, choosing k, names and descriptions."""

from datetime import timedelta

import numpy as np
import pytest

from profiles.scores.clusters import (
    Activity,
    Feature,
    Features,
    Fit,
    NotEnoughProfiles,
    best,
    candidate_ks,
    clean_category,
    describe,
    features,
    fit,
    name_clusters,
    standardise,
    top_categories,
)
from tests.profiles.scores.seed import NOW


def _row(activity: Activity, categories: tuple[str, ...] = ()) -> dict[str, float]:
    found = features([activity], now=NOW, categories=categories)
    return dict(zip(found.names, found.values[0].tolist(), strict=True))


def test_features_are_defined_from_stats_and_events() -> None:
    row = _row(
        Activity(
            "p1",
            last_seen=NOW - timedelta(days=3, hours=12),
            orders=4,
            revenue_cents=12_345,
            email_opens=6,
            email_clicks=3,
            emails_delivered=8,
            views=30,
            active_days=5,
            categories={"Books": 3, "Garden": 1},
        ),
        ("Books", "Toys"),
    )
    assert row == {
        "recency_days": 3.5,
        "orders": 4.0,
        "revenue": 123.45,
        "email_open_rate": 0.75,
        "email_click_rate": 0.5,
        "session_depth": 6.0,
        "category:Books": 0.75,
        "category:Toys": 0.0,
    }


def test_rates_without_a_denominator_are_zero_and_opens_without_deliveries_count_fully() -> None:
    quiet = _row(Activity("p1", last_seen=NOW))
    assert quiet["email_open_rate"] == quiet["email_click_rate"] == quiet["session_depth"] == 0
    no_deliveries = _row(Activity("p2", last_seen=NOW, email_opens=2))
    assert no_deliveries["email_open_rate"] == 1.0


def test_rows_are_in_profile_id_order_whatever_the_input_order() -> None:
    activities = [Activity(pid, last_seen=NOW) for pid in ("p3", "p1", "p2")]
    assert features(activities, now=NOW, categories=()).profile_ids == ("p1", "p2", "p3")


def test_top_categories_rank_by_events_then_name() -> None:
    activities = [
        Activity("a", last_seen=NOW, categories={"Toys": 2, "Books": 5}),
        Activity("b", last_seen=NOW, categories={"Garden": 5, "Art": 1}),
    ]
    assert top_categories(activities, 3) == ("Books", "Garden", "Toys")


def test_category_names_are_trimmed_and_bounded() -> None:
    assert clean_category("  Home   & Garden ") == "Home & Garden"
    assert clean_category(" ") is None
    assert clean_category(42) is None
    assert len(clean_category("x" * 500) or "") == 60


def test_standardising_logs_skewed_columns_and_zeroes_constant_ones() -> None:
    found = Features(
        ("a", "b"),
        (Feature.MONETARY, Feature.OPEN_RATE, Feature.CLICK_RATE),
        np.array([[0.0, 0.2, 0.5], [np.e - 1, 0.6, 0.5]]),
    )
    z = standardise(found)
    assert z.ravel().tolist() == pytest.approx([-1.0, -1.0, 0.0, 1.0, 1.0, 0.0])


def test_a_fixed_k_needs_that_many_different_profiles() -> None:
    assert candidate_ks(5, k=4, k_min=2, k_max=8) == [4]
    with pytest.raises(NotEnoughProfiles, match="at least 4 different profiles; there are 3"):
        candidate_ks(3, k=4, k_min=2, k_max=8)


def test_a_k_range_is_cut_to_what_the_silhouette_can_score() -> None:
    assert candidate_ks(5, k=None, k_min=2, k_max=8) == [2, 3, 4]
    with pytest.raises(NotEnoughProfiles):
        candidate_ks(2, k=None, k_min=2, k_max=8)


def test_the_best_fit_has_the_highest_silhouette_and_ties_go_to_the_smaller_k() -> None:
    labels = np.zeros(3, dtype=np.int64)
    fits = [Fit(2, labels, 0.5), Fit(3, labels, 0.7), Fit(4, labels, 0.7), Fit(5, labels, None)]
    assert best(fits).k == 3


def test_clusters_are_named_by_revenue_then_orders() -> None:
    activities = [
        *(Activity(f"a{n}", last_seen=NOW, orders=1, revenue_cents=1_000) for n in range(4)),
        *(Activity(f"b{n}", last_seen=NOW, orders=9, revenue_cents=90_000) for n in range(3)),
    ]
    found = features(activities, now=NOW, categories=())
    z = standardise(found)
    named = name_clusters(found, z, fit(z, 2, seed=7))
    assert [(c.label, c.size, c.centroid["revenue"]) for c in named] == [
        ("c1", 3, 900.0),
        ("c2", 4, 10.0),
    ]
    assert named[0].members == ("b0", "b1", "b2")


def test_a_description_names_the_furthest_features_first() -> None:
    z = {"recency_days": 0.1, "orders": 1.5, "revenue": -0.9, "email_open_rate": 2.0}
    centroid = {"recency_days": 9.0, "orders": 12.0, "revenue": 15.0, "email_open_rate": 0.8}
    assert describe(z, centroid) == "opens most emails, high frequency, low spend"


def test_a_description_says_never_ordered_once_and_skips_low_category_shares() -> None:
    z = {"orders": -1.2, "revenue": -1.1, "category:Books": -0.8, "session_depth": 0.7}
    centroid = {"orders": 0.0, "revenue": 0.0, "category:Books": 0.0, "session_depth": 20.0}
    assert describe(z, centroid) == "never ordered, views many pages a day"


def test_an_unremarkable_centroid_is_described_as_average() -> None:
    assert describe({"orders": 0.2}, {"orders": 2.0}) == "close to the average customer"


def test_a_leaning_category_is_told_from_a_dominant_one() -> None:
    z = {"category:Toys": 1.0, "category:Art": 0.9}
    assert describe(z, {"category:Toys": 0.7, "category:Art": 0.3}) == "mostly Toys, leans to Art"
