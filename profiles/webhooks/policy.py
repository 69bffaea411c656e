"""When to try a delivery again, when to give up, and how long a lease lasts (no I/O)."""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class Outcome(StrEnum):
    """What a receiver's answer means for its delivery."""

    DELIVERED = "delivered"  # 2xx
    GONE = "gone"  # 410: the receiver asks to stop; its subscription is paused
    FAILED = "failed"  # anything else, a timeout or a network error: try again later


def outcome(status: int | None) -> Outcome:
    """Returns what an HTTP status means (None: no answer at all)."""
    if status is not None and 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.GONE
    return Outcome.FAILED


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, and a dead letter after `max_attempts` failures.

    The n-th failure waits `base × 2^(n-1)`, at most `cap`, then ± `jitter`
    (applied after the cap, so capped retries of many rows still spread out).
    Defaults: 10 s, 20 s, 40 s, … 1 h; the 8th failure is final, about 21 min
    after the first attempt.
    """

    base: timedelta = timedelta(seconds=10)
    cap: timedelta = timedelta(hours=1)
    jitter: float = 0.2
    max_attempts: int = 8

    def __post_init__(self) -> None:
        if self.base <= timedelta(0) or self.cap < self.base:
            raise ValueError("backoff needs 0 < base <= cap")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay(self, failures: int, *, rand: Callable[[], float] = random.random) -> timedelta:
        """Returns the wait after the `failures`-th failed attempt (1 for the first)."""
        if failures < 1:
            raise ValueError("failures counts from 1")
        # In float seconds: base × 2^(n-1) would overflow a timedelta for large n.
        grown = self.base.total_seconds() * math.pow(2.0, min(failures - 1, 1000))
        capped = min(grown, self.cap.total_seconds())
        return timedelta(seconds=capped * (1 + self.jitter * (2 * rand() - 1)))

    def gives_up(self, attempts: int) -> bool:
        """Tells whether a delivery that failed `attempts` times is dead."""
        return attempts >= self.max_attempts


def lease_for(*, batch: int, concurrency: int, timeout: timedelta) -> timedelta:
    """Returns a lease that outlasts sending `batch` rows, `concurrency` at a time.

    Each request ends within `timeout`, so a batch ends within
    ⌈batch / concurrency⌉ timeouts; a margin covers the database writes. A lease
    that ended mid-batch would let a second worker send the same rows.
    """
    rounds = math.ceil(batch / max(concurrency, 1))
    return timeout * rounds + timedelta(seconds=30)
