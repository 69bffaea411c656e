"""The webhook delivery loop, run inside `kindred serve` (any number may run, anywhere)."""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from pymongo.errors import PyMongoError

from profiles.webhooks.service import WebhookService

log = logging.getLogger(__name__)

MAX_PAUSE_S = 10.0


async def run(
    service: WebhookService, stop: asyncio.Event, *, poll_seconds: float, batch_size: int = 100
) -> None:
    """Delivers due webhooks until `stop` is set; a failed pass is retried after a pause.

    A full batch is followed at once by the next; otherwise the loop waits
    `poll_seconds`. A pass in progress when `stop` is set is finished first (its
    requests end within the configured timeout); a pass cut short leaves its rows
    leased, and they are sent again once the lease ends.
    """
    log.info("webhook delivery started", extra={"owner": service.owner})
    pause = poll_seconds
    while not stop.is_set():
        try:
            report = await service.deliver_due(now=datetime.now(UTC), limit=batch_size)
        except PyMongoError as exc:
            log.warning("webhook pass failed; retrying", extra={"error": str(exc)})
            pause = min(pause * 2, MAX_PAUSE_S)
        except Exception:
            # A bug must not stop delivery for everyone; the rows' leases end and they return.
            log.exception("webhook pass failed unexpectedly; retrying")
            pause = min(pause * 2, MAX_PAUSE_S)
        else:
            pause = poll_seconds
            if report.leased:
                log.info(
                    "webhooks sent",
                    extra={
                        "leased": report.leased,
                        "delivered": report.delivered,
                        "retried": report.retried,
                        "dead": report.dead,
                        "cancelled": report.cancelled,
                    },
                )
            if report.leased >= batch_size:
                continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=pause)
    log.info("webhook delivery stopped", extra={"owner": service.owner})


async def run_when_ready(
    service: WebhookService,
    ready: asyncio.Event,
    stop: asyncio.Event,
    *,
    poll_seconds: float,
    batch_size: int = 100,
) -> None:
    """Waits until the app is ready (database up, indexes made), then runs `run`."""
    waiters = [asyncio.ensure_future(ready.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    if stop.is_set():
        return
    await run(service, stop, poll_seconds=poll_seconds, batch_size=batch_size)
