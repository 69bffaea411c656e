"""The scheduler: wakes for profiles whose segment memberships a time rule made due.

Each profile stores when its membership could next change by time alone
(`next_eval_at`, indexed); every `period` the loop re-evaluates only the
profiles due by then, so "48 h after the cart" flips within one period of the
deadline and nobody else is read. It also computes the deadlines of every
profile for a time-based segment that was just created or changed.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from pymongo.errors import PyMongoError

from profiles.scores.service import ScoreService
from profiles.segments.service import SegmentService

log = logging.getLogger(__name__)

DUE_BATCH = 500


async def tick(segments: SegmentService, *, now: datetime) -> int:
    """Runs one scheduler pass at `now`; returns how many membership changes it made."""
    scheduled = await segments.schedule(now=now)
    if scheduled:
        log.info("time rules scheduled", extra={"profiles": scheduled})
    changes = 0
    while True:
        result = await segments.run_due(now=now, limit=DUE_BATCH)
        changes += len(result.transitions)
        if result.profiles < DUE_BATCH:
            return changes


async def refresh_rfm(scores: ScoreService, segments: SegmentService, *, now: datetime) -> None:
    """Recomputes RFM scores, then the segments whose rules read computed traits."""
    summary = await scores.recompute_rfm(now=now)
    log.info("RFM recomputed", extra={"scored": summary.scored, "changed": summary.changed})
    if summary.changed:
        for result in await segments.recompute_reading_computed(now=now):
            log.info(
                "segment recomputed after RFM",
                extra={"segment": result.segment_id, "size": result.size},
            )


async def run(
    segments: SegmentService,
    stop: asyncio.Event,
    *,
    period_seconds: float,
    clock: Callable[[], datetime],
    scores: ScoreService | None = None,
    rfm_every: timedelta | None = None,
) -> None:
    """Runs scheduler passes every `period_seconds` until `stop` is set.

    With `scores` and `rfm_every`, RFM scores are recomputed that often too
    (first after one period, so a start-up is not slowed down).
    """
    log.info("segment scheduler started", extra={"period_s": period_seconds})
    rfm_due = clock() + timedelta(seconds=period_seconds)
    while not stop.is_set():
        try:
            now = clock()
            changes = await tick(segments, now=now)
            if changes:
                log.info("time rules applied", extra={"changes": changes})
            if scores is not None and rfm_every and now >= rfm_due:
                rfm_due = now + rfm_every
                await refresh_rfm(scores, segments, now=now)
        except PyMongoError as exc:
            log.warning("scheduler pass failed; retrying", extra={"error": str(exc)})
        except Exception:
            # A bug must not stop time rules for everyone; the next pass retries.
            log.exception("scheduler pass failed unexpectedly")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=period_seconds)
    log.info("segment scheduler stopped")
