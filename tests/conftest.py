"""Test fixtures: one real database server per session, a fresh database per test.

Set KINDRED_TEST_MONGODB_URI to run the whole suite against a real MongoDB
instead of the embedded SecantusDB server.
"""

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.embedded import MEMORY, EmbeddedServer, free_port
from app.main import create_app
from app.mongo import Document
from app.settings import Environment, LogFormat, LogLevel, Settings
from tests.fixtures.cli import clean_env

AppFactory = Callable[..., AbstractAsyncContextManager[FastAPI]]


@pytest.fixture(scope="session")
def mongodb_uri() -> Iterator[str]:
    """The URI of the session's database server."""
    external = os.environ.get("KINDRED_TEST_MONGODB_URI")
    if external:
        yield external
        return
    with EmbeddedServer(MEMORY) as server:
        yield server.uri


@pytest.fixture
def database_name() -> str:
    """A database name no other test uses."""
    return f"kindred_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def db(mongodb_uri: str, database_name: str) -> AsyncIterator[AsyncDatabase[Document]]:
    """A fresh database, dropped after the test."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    try:
        yield client[database_name]
        await client.drop_database(database_name)
    finally:
        await client.close()


@pytest.fixture
def settings(mongodb_uri: str, database_name: str) -> Settings:
    """Settings for an app on the test database; every field a test relies on is explicit."""
    return make_settings(mongodb_uri, database_name)


def make_settings(mongodb_uri: str, database: str, **overrides: Any) -> Settings:
    """Builds test settings that ignore the developer's KINDRED_* environment."""
    values: dict[str, Any] = {
        "mongodb_uri": mongodb_uri,
        "database": database,
        "env": Environment.DEV,
        "log_level": LogLevel.INFO,
        "log_format": LogFormat.TEXT,
        "host": "127.0.0.1",
        "port": 0,
        # Tests that need the profile builder run it themselves, or turn this on.
        "worker_in_process": False,
        "worker_poll_seconds": 0.05,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_app(settings: Settings, *, wait_ready: bool = True) -> AsyncIterator[FastAPI]:
    """Runs an app's lifespan around the block; waits until it is ready unless told not to."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        if wait_ready:
            await asyncio.wait_for(app.state.kindred.ready.wait(), timeout=30)
        yield app


@pytest.fixture
def app_factory() -> AppFactory:
    """Runs an app built from the given settings, for tests that need other settings."""
    return running_app


@pytest.fixture
async def app(settings: Settings, db: AsyncDatabase[Document]) -> AsyncIterator[FastAPI]:
    """A ready app on the test database."""
    async with running_app(settings) as app:
        yield app


@contextlib.asynccontextmanager
async def http_client(app: FastAPI, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that calls the app in-process."""
    transport = httpx.ASGITransport(app=app)
    base_url = "http://kindred.test"
    async with httpx.AsyncClient(transport=transport, base_url=base_url, **kwargs) as c:
        yield c


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app."""
    async with http_client(app) as c:
        yield c


class LiveServer:
    """A uvicorn server in a thread of its own, on a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_config=None
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("live server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def live_server(settings: Settings, db: AsyncDatabase[Document]) -> Iterator[LiveServer]:
    """A real HTTP server on the test database, for tests that use real clients."""
    server = LiveServer(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def admin_headers(db: AsyncDatabase[Document]) -> dict[str, str]:
    """Request headers that authenticate with a fresh admin key in the test database."""
    # Imported here so this fixture stays one appended block.
    from app.auth import KeyStore, Scope

    _, secret = await KeyStore(db).create(name="test-admin", scopes=[Scope.ADMIN])
    return {"authorization": f"Bearer {secret}"}


@pytest.fixture
def cli_env(mongodb_uri: str, database_name: str, tmp_path: Path) -> dict[str, str]:
    """An environment for `kindred` on the test database, with no KINDRED_* of the developer."""
    return clean_env(
        KINDRED_MONGODB_URI=mongodb_uri,
        KINDRED_DATABASE=database_name,
        # Never used with a URI set; named so a slip would not touch ./kindred-data.
        KINDRED_DATA_DIR=str(tmp_path / "unused"),
        COLUMNS="200",
    )
