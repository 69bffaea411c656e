"""The MongoDB client and the index registry every domain package contributes to."""

import logging
from collections.abc import Mapping, Sequence

from pymongo import AsyncMongoClient, IndexModel, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from app import __version__

log = logging.getLogger(__name__)

Document = dict[str, object]
IndexDeclarations = Mapping[str, Sequence[IndexModel]]


def index_registry() -> list[IndexDeclarations]:
    """Returns every domain package's index declarations, in one list.

    Each domain package declares `INDEXES` in its store module; adding a package
    here is the only step needed for its indexes to exist everywhere.
    """
    from app import auth
    from app.ingest import store as ingest_store
    from identity import store as identity_store
    from profiles import store as profile_store
    from profiles.scores import store as scores_store
    from profiles.segments import store as segment_store
    from profiles.webhooks import store as webhook_store

    return [
        profile_store.INDEXES,
        identity_store.INDEXES,
        auth.INDEXES,
        ingest_store.INDEXES,
        segment_store.INDEXES,
        scores_store.INDEXES,
        webhook_store.INDEXES,
    ]


def create_client(
    uri: str, *, listeners: Sequence[monitoring.CommandListener] = ()
) -> AsyncMongoClient[Document]:
    """Returns an async client; it connects lazily, on the current event loop."""
    return AsyncMongoClient(
        uri,
        appname=f"kindred/{__version__}",
        tz_aware=True,
        event_listeners=list(listeners),
        serverSelectionTimeoutMS=5000,
    )


async def ensure_indexes(db: AsyncDatabase[Document], registry: Sequence[IndexDeclarations]) -> int:
    """Creates every declared index that is missing; returns how many were declared."""
    declared = 0
    for declarations in registry:
        for collection, models in declarations.items():
            if models:
                await db[collection].create_indexes(list(models))
                declared += len(models)
    log.info("indexes ensured", extra={"database": db.name, "indexes": declared})
    return declared
