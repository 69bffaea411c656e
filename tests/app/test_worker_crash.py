"""Killing `kindred worker` with SIGKILL mid-run loses and doubles nothing."""

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app.eventlog import EVENTS
from tests.app.test_builder import _comparable, _profiles, _story
from tests.fixtures.cli import KINDRED, clean_env
from tests.fixtures.events import builder_for, drain

Db = AsyncDatabase[dict[str, Any]]


def _worker(mongodb_uri: str, database: str, log: Path) -> subprocess.Popen[bytes]:
    env = clean_env(
        KINDRED_MONGODB_URI=mongodb_uri,
        KINDRED_DATABASE=database,
        # A killed worker's batch is free for the next one a second later.
        KINDRED_WORKER_LEASE_SECONDS="1",
        KINDRED_WORKER_POLL_SECONDS="0.05",
    )
    with log.open("ab") as sink:
        return subprocess.Popen(
            [KINDRED, "worker", "--batch-size", "15"], env=env, stdout=sink, stderr=sink
        )


async def _wait(predicate: Any, seconds: float) -> bool:
    for _ in range(int(seconds / 0.02)):
        if await predicate():
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.timeout(180)
async def test_a_worker_killed_mid_run_leaves_what_a_clean_run_leaves(
    db: Db, mongodb_uri: str, tmp_path: Path
) -> None:
    story = [e for person in range(5) for e in _story_for(person)]
    clean = db.client[db.name + "_clean"]
    try:
        await clean[EVENTS].insert_many([dict(e) for e in story])
        await drain(builder_for(clean))
        expected = _comparable(await _profiles(clean))
    finally:
        await db.client.drop_database(clean.name)

    await db[EVENTS].insert_many([dict(e) for e in story])

    async def applied() -> int:
        return await db[EVENTS].count_documents({"status": "applied"})

    log = tmp_path / "worker.log"
    first = _worker(mongodb_uri, db.name, log)
    try:
        assert await _wait(lambda: _some(applied), 30), log.read_text()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert await applied() < len(story), "the kill must land before the run ends"

    second = _worker(mongodb_uri, db.name, log)
    try:
        assert await _wait(lambda: _all(applied, len(story)), 60), log.read_text()
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(timeout=30)
    assert _comparable(await _profiles(db)) == expected


async def _some(applied: Any) -> bool:
    return bool(await applied())


async def _all(applied: Any, total: int) -> bool:
    return bool(await applied() == total)


def _story_for(person: int) -> list[dict[str, Any]]:
    # Several copies of the shared story, with ids of their own for every person.
    return [
        {**e, "_id": f"{e['_id']}_{person}", "message_id": f"{e['message_id']}_{person}"}
        | _renamed(e, person)
        for e in _story()
    ]


def _renamed(event: dict[str, Any], person: int) -> dict[str, Any]:
    renamed: dict[str, Any] = {}
    for field in ("user_id", "anonymous_id"):
        if event.get(field):
            renamed[field] = f"{event[field]}_{person}"
    traits = dict(event.get("traits") or {})
    if "email" in traits:
        traits["email"] = traits["email"].replace("@", f"+{person}@")
    renamed["traits"] = traits
    return renamed
