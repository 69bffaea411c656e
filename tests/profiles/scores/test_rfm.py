"""RFM rules with no I/O: quintiles from ranks, ties, and the named groups."""

import pytest

from profiles.scores.rfm import (
    GRID,
    RfmGroup,
    RfmInput,
    competition_ranks,
    fm_score,
    group_of,
    quintile,
    score_all,
)


def test_ten_distinct_values_fill_each_quintile_twice() -> None:
    assert [quintile(rank, 10) for rank in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_a_lone_profile_scores_one() -> None:
    assert quintile(1, 1) == 1


def test_tied_values_share_the_lowest_rank() -> None:
    assert competition_ranks({"a": 1, "b": 1, "c": 1, "d": 2}) == {"a": 1, "b": 1, "c": 1, "d": 4}


def test_one_time_buyers_all_score_frequency_one_when_they_are_most_customers() -> None:
    inputs = {
        f"p{n}": RfmInput(days_since_order=n, orders=1 if n < 6 else 2, revenue_cents=100 * n)
        for n in range(10)
    }
    scores = score_all(inputs)
    assert {scores[f"p{n}"].frequency for n in range(6)} == {1}
    assert {scores[f"p{n}"].frequency for n in range(6, 10)} == {4}


def test_more_recent_more_frequent_and_bigger_spenders_score_higher() -> None:
    scores = score_all(
        {
            "old": RfmInput(days_since_order=300, orders=1, revenue_cents=1_000),
            "new": RfmInput(days_since_order=1, orders=9, revenue_cents=90_000),
        }
    )
    assert scores["new"].code == "333"
    assert scores["old"].code == "111"


def test_fm_rounds_the_mean_half_up() -> None:
    assert [fm_score(1, 1), fm_score(1, 2), fm_score(2, 3), fm_score(5, 4)] == [1, 2, 3, 5]


@pytest.mark.parametrize(
    ("r", "f", "m", "group"),
    [
        (5, 5, 5, RfmGroup.CHAMPIONS),
        (5, 1, 1, RfmGroup.NEW_CUSTOMERS),
        (5, 2, 3, RfmGroup.POTENTIAL_LOYALIST),
        (4, 1, 1, RfmGroup.PROMISING),
        (4, 4, 5, RfmGroup.LOYAL_CUSTOMERS),
        (3, 3, 3, RfmGroup.NEED_ATTENTION),
        (3, 1, 2, RfmGroup.ABOUT_TO_SLEEP),
        (2, 4, 3, RfmGroup.AT_RISK),
        (1, 5, 5, RfmGroup.CANNOT_LOSE_THEM),
        (2, 2, 1, RfmGroup.HIBERNATING),
        (1, 1, 2, RfmGroup.LOST),
    ],
)
def test_groups_follow_the_r_by_fm_grid(r: int, f: int, m: int, group: RfmGroup) -> None:
    assert group_of(r, f, m) is group


def test_the_grid_names_every_cell_and_uses_every_scored_group() -> None:
    assert sorted(GRID) == [1, 2, 3, 4, 5]
    used = {group for row in GRID.values() for group in row}
    assert used == set(RfmGroup) - {RfmGroup.NO_PURCHASES}


def test_scores_outside_one_to_five_are_refused() -> None:
    with pytest.raises(ValueError, match="1 to 5"):
        group_of(0, 3, 3)
    with pytest.raises(ValueError, match="between 1 and 4"):
        quintile(5, 4)
