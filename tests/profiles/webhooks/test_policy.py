"""Backoff, dead-lettering, leases and what an answer means: no I/O."""

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiles.webhooks.policy import Outcome, RetryPolicy, lease_for, outcome


def test_waits_double_from_ten_seconds_up_to_an_hour() -> None:
    policy = RetryPolicy()

    waits = [policy.delay(n, rand=lambda: 0.5).total_seconds() for n in range(1, 12)]

    assert waits == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]


@given(failures=st.integers(min_value=1, max_value=10_000), r=st.floats(0, 1))
def test_jitter_stays_within_twenty_percent_of_the_capped_wait(failures: int, r: float) -> None:
    policy = RetryPolicy()
    plain = min(10 * 2 ** min(failures - 1, 20), 3600)

    wait = policy.delay(failures, rand=lambda: r).total_seconds()

    assert plain * 0.8 - 1e-6 <= wait <= plain * 1.2 + 1e-6


def test_jitter_spreads_the_waits() -> None:
    policy = RetryPolicy()

    low = policy.delay(3, rand=lambda: 0.0)
    high = policy.delay(3, rand=lambda: 1.0)

    assert (low, high) == (timedelta(seconds=32), timedelta(seconds=48))


def test_a_delivery_is_dead_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=8)

    assert [policy.gives_up(n) for n in (1, 7, 8, 9)] == [False, False, True, True]


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"jitter": 1.0}, {"base": timedelta(0)}])
def test_a_nonsensical_policy_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (299, Outcome.DELIVERED),
        (410, Outcome.GONE),
        (301, Outcome.FAILED),  # redirects are not followed
        (404, Outcome.FAILED),
        (429, Outcome.FAILED),
        (500, Outcome.FAILED),
        (None, Outcome.FAILED),
    ],
)
def test_what_an_answer_means(status: int | None, expected: Outcome) -> None:
    assert outcome(status) is expected


def test_a_lease_outlasts_the_slowest_batch() -> None:
    lease = lease_for(batch=100, concurrency=10, timeout=timedelta(seconds=10))

    assert lease == timedelta(seconds=10 * 10 + 30)
