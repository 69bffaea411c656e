"""What the app holds for its lifetime: settings, the database, metrics, auth, readiness."""

import asyncio
from dataclasses import dataclass, field

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import Authenticator
from app.metrics import Metrics
from app.mongo import Document
from app.settings import Settings


@dataclass
class KindredState:
    """Built by the lifespan; routes reach it through `request.app.state.kindred`."""

    settings: Settings
    client: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    metrics: Metrics
    authenticator: Authenticator
    ready: asyncio.Event = field(default_factory=asyncio.Event)
