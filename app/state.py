"""What the app holds for its lifetime: settings, the database, metrics, auth, readiness."""

import asyncio
from dataclasses import dataclass, field

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import Authenticator, KeyStore
from app.eventlog import EventLog
from app.ingest.service import IngestService
from app.ingest.sources import SourceAuthenticator
from app.ingest.store import SourceStore
from app.metrics import Metrics
from app.mongo import Document
from app.settings import Settings
from identity.service import IdentityService, MergeService
from identity.store import IdentityStore, SuggestionStore
from profiles.segments.service import SegmentService
from profiles.segments.store import SegmentStore
from profiles.service import ProfileService
from profiles.store import ProfileStore
from profiles.traits import Precedence
from profiles.webhooks.service import WebhookService


def profile_service(db: AsyncDatabase[Document], settings: Settings) -> ProfileService:
    """Returns the profile service with the configured source precedence."""
    return ProfileService(
        ProfileStore(db), precedence=Precedence(tuple(settings.source_precedence))
    )


@dataclass
class KindredState:
    """Built by the lifespan; routes reach it through `request.app.state.kindred`."""

    settings: Settings
    client: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    metrics: Metrics
    authenticator: Authenticator
    profiles: ProfileService
    identities: IdentityStore
    identity: IdentityService
    merges: MergeService
    suggestions: SuggestionStore
    segments: SegmentService
    webhooks: WebhookService
    # Ingest: write-key checks (cached) and the event log with its quarantine.
    sources: SourceAuthenticator
    ingest: IngestService
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(
        cls, settings: Settings, client: AsyncMongoClient[Document], metrics: Metrics
    ) -> "KindredState":
        """Returns the state with every service built on the settings' database."""
        db = client[settings.database]
        profiles = profile_service(db, settings)
        identities = IdentityStore(db)
        webhooks = WebhookService.on(db, config=settings.webhook_config())
        segments = SegmentService(client, SegmentStore(db), sink=webhooks)
        merges = MergeService.on(
            db,
            profiles=profiles,
            events=EventLog(db),
            rules=settings.identity_rules(),
            changed=segments.after_merge,
        )
        return cls(
            settings=settings,
            client=client,
            db=db,
            metrics=metrics,
            authenticator=Authenticator(KeyStore(db)),
            profiles=profiles,
            identities=identities,
            identity=IdentityService(identities=identities, profiles=profiles.store),
            merges=merges,
            suggestions=merges.suggestions,
            segments=segments,
            webhooks=webhooks,
            sources=SourceAuthenticator(SourceStore(db)),
            ingest=IngestService.from_settings(db, settings),
        )
