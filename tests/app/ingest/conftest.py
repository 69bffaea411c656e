"""Fixtures for the ingest tests: a source and its write key, and request helpers."""

import base64

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app.ingest.store import SourceStore
from app.mongo import Document

SOURCE = "web"


@pytest.fixture
async def write_key(db: AsyncDatabase[Document]) -> str:
    """The write key of a fresh source named `web`."""
    _, key = await SourceStore(db).create(SOURCE)
    return key


def basic(write_key: str) -> dict[str, str]:
    """Returns the header a Segment SDK sends: the write key as Basic username, no password."""
    token = base64.b64encode(f"{write_key}:".encode()).decode()
    return {"authorization": f"Basic {token}"}


async def all_docs(db: AsyncDatabase[Document], collection: str) -> list[Document]:
    """Returns every document of a collection."""
    return await db[collection].find({}).to_list()
