"""The profile builder's loop, run by `kindred worker` or inside `kindred serve`."""

import asyncio
import contextlib
import logging
import os
import socket
from datetime import timedelta

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from app.builder import ProfileBuilder
from app.eventlog import EventLog
from app.mongo import Document
from app.settings import Settings
from identity.matching_service import MatchService
from identity.service import MergeService
from identity.store import IdentityStore, SuggestionStore
from profiles.segments.service import SegmentService
from profiles.segments.store import SegmentStore
from profiles.service import ProfileService
from profiles.webhooks.service import WebhookService

log = logging.getLogger(__name__)


def worker_name() -> str:
    """Returns a name unique to this process, used as the owner of its leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def segment_service(
    client: AsyncMongoClient[Document], settings: Settings, webhooks: WebhookService | None = None
) -> SegmentService:
    """Returns the segment service on the settings' database; its changes feed the webhooks."""
    db = client[settings.database]
    sink = webhooks or WebhookService.on(db, config=settings.webhook_config())
    return SegmentService(client, SegmentStore(db), sink=sink)


def build(
    client: AsyncMongoClient[Document],
    settings: Settings,
    profiles: ProfileService,
    *,
    webhooks: WebhookService | None = None,
) -> ProfileBuilder:
    """Returns a profile builder on the settings' database."""
    db = client[settings.database]
    identities = IdentityStore(db)
    matcher = None
    if settings.match_online:
        matcher = MatchService(
            profiles=profiles.store,
            identities=identities,
            suggestions=SuggestionStore(db),
            settings=settings.match_settings(),
        )
    events = EventLog(db)
    rules = settings.identity_rules()
    segments = segment_service(client, settings, webhooks) if settings.segments_realtime else None
    return ProfileBuilder(
        client,
        profiles=profiles,
        identities=identities,
        events=events,
        merges=MergeService.on(db, profiles=profiles, events=events, rules=rules),
        owner=worker_name(),
        batch_size=settings.worker_batch_size,
        lease=timedelta(seconds=settings.worker_lease_seconds),
        rules=rules,
        matcher=matcher,
        segments=segments,
    )


async def run(builder: ProfileBuilder, stop: asyncio.Event, *, poll_seconds: float) -> None:
    """Applies batches until `stop` is set; a failed batch is retried after a pause.

    A batch in progress when `stop` is set is finished first.
    """
    log.info("profile builder started", extra={"owner": builder.owner})
    pause = poll_seconds
    while not stop.is_set():
        try:
            result = await builder.run_batch()
        except PyMongoError as exc:
            # Its events stay leased until the lease ends, then any worker retries them.
            log.warning("batch failed; retrying", extra={"error": str(exc)})
            pause = min(pause * 2, 10.0)
        except Exception:
            # A bug must not stop the builder for everyone; the batch is retried later.
            log.exception("batch failed unexpectedly; retrying")
            pause = min(pause * 2, 10.0)
        else:
            if result.applied:
                log.info(
                    "batch applied",
                    extra={
                        "events": result.applied,
                        "profiles": result.profiles,
                        "new_profiles": result.created,
                        "merged": result.merged,
                    },
                )
                pause = poll_seconds
                continue
            pause = poll_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=pause)
    log.info("profile builder stopped", extra={"owner": builder.owner})
