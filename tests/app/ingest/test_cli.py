"""`kindred sources` and `kindred quarantine` as a user meets them: the real console script."""

import json
import re
from datetime import UTC, datetime, timedelta

import httpx
from pymongo.asynchronous.database import AsyncDatabase

from app.ingest.models import raw_json
from app.ingest.store import EventStore, SourceStore
from app.mongo import Document
from tests.app.ingest.conftest import SOURCE, all_docs, basic
from tests.fixtures.cli import run_kindred

WRITE_KEY = re.compile(r"kwk_[A-Za-z0-9_-]{43}")


async def test_sources_create_prints_a_write_key_that_verifies(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    result = await run_kindred(cli_env, "sources", "create", "pos-eu")
    assert result.returncode == 0, result.stderr
    write_key = result.stdout.splitlines()[-1]
    assert WRITE_KEY.fullmatch(write_key)
    assert "will not be shown again" in result.stdout
    source = await SourceStore(db).verify(write_key)
    assert source is not None
    assert source.name == "pos-eu"
    [raw] = await all_docs(db, "sources")
    assert set(raw) == {"_id", "key_hash", "created_at", "revoked_at"}
    assert write_key not in repr(raw)


async def test_sources_list_shows_names_but_never_keys(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    _, write_key = await SourceStore(db).create("web")
    await SourceStore(db).create("crm")
    result = await run_kindred(cli_env, "sources", "list")
    assert result.returncode == 0, result.stderr
    assert "web" in result.stdout
    assert "crm" in result.stdout
    assert write_key not in result.stdout
    assert "kwk_" not in result.stdout


async def test_sources_revoke_makes_the_key_stop_verifying(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    _, write_key = await SourceStore(db).create("web")
    result = await run_kindred(cli_env, "sources", "revoke", "web")
    assert result.returncode == 0, result.stderr
    assert await SourceStore(db).verify(write_key) is None
    listed = await run_kindred(cli_env, "sources", "list")
    assert re.search(r"web.*\d{4}-\d\d-\d\d.*\d{4}-\d\d-\d\d", listed.stdout)


async def test_sources_refuse_a_bad_name_a_taken_name_and_an_unknown_one(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    bad = await run_kindred(cli_env, "sources", "create", "Web Site")
    assert bad.returncode == 2
    assert "lowercase" in bad.stderr
    await SourceStore(db).create("web")
    taken = await run_kindred(cli_env, "sources", "create", "web")
    assert taken.returncode == 1
    assert "exists already" in taken.stderr
    unknown = await run_kindred(cli_env, "sources", "revoke", "nope")
    assert unknown.returncode == 1
    assert "nope" in unknown.stderr
    for result in (bad, taken, unknown):
        assert "Traceback" not in result.stderr + result.stdout
    assert [s.name for s in await SourceStore(db).list()] == ["web"]


async def test_quarantine_list_shows_id_source_and_reason(
    cli_env: dict[str, str], client: httpx.AsyncClient, write_key: str
) -> None:
    await client.post("/v1/track", json={"userId": "u1"}, headers=basic(write_key))
    result = await run_kindred(cli_env, "quarantine", "list", "--limit", "10")
    assert result.returncode == 0, result.stderr
    assert re.search(r"qtn_[0-9A-Z]{26}", result.stdout)
    assert SOURCE in result.stdout
    assert "event: required for track events" in result.stdout


async def test_replay_keeps_a_still_invalid_event_with_its_reason(
    cli_env: dict[str, str],
    client: httpx.AsyncClient,
    db: AsyncDatabase[Document],
    write_key: str,
) -> None:
    await client.post("/v1/track", json={"userId": "u1"}, headers=basic(write_key))
    [row] = await all_docs(db, "quarantine")
    result = await run_kindred(cli_env, "quarantine", "replay", row["_id"])
    assert result.returncode == 0, result.stderr
    assert "Replayed 1: 0 stored, 0 already stored, 1 still invalid." in result.stdout
    [after] = await all_docs(db, "quarantine")
    assert after["_id"] == row["_id"]
    assert after["reason"].startswith("event: required for track events")
    assert after["replayed_at"] is not None
    assert await all_docs(db, "events") == []


async def test_replay_stores_a_now_valid_event_once_and_releases_it(
    cli_env: dict[str, str], db: AsyncDatabase[Document], write_key: str
) -> None:
    received = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    event = {
        "type": "track",
        "userId": "u1",
        "event": "Fixed",
        "messageId": "fix-1",
        "timestamp": "2026-01-02T03:04:00Z",
        "sentAt": "2026-01-02T03:04:02Z",
    }
    store = EventStore(db)
    [fixed] = await store.add_to_quarantine(
        [("fix-1", "event: required for track events", raw_json(event))],
        source=SOURCE,
        received_at=received,
    )
    [resent] = await store.add_to_quarantine(
        [("fix-1", "an older copy", raw_json(event))], source=SOURCE, received_at=received
    )
    result = await run_kindred(cli_env, "quarantine", "replay", fixed)
    assert result.returncode == 0, result.stderr
    assert "1 stored" in result.stdout
    [stored] = await all_docs(db, "events")
    assert stored["message_id"] == "fix-1"
    assert stored["source"] == SOURCE
    assert stored["received_at"] == received
    assert stored["timestamp"] == received - timedelta(seconds=2)
    assert [q["_id"] for q in await all_docs(db, "quarantine")] == [resent]
    again = await run_kindred(cli_env, "quarantine", "replay", "--all")
    assert again.returncode == 0, again.stderr
    assert "Replayed 1: 0 stored, 1 already stored, 0 still invalid." in again.stdout
    assert len(await all_docs(db, "events")) == 1
    assert await all_docs(db, "quarantine") == []


async def test_replay_needs_ids_or_all_and_reports_unknown_ids(
    cli_env: dict[str, str], db: AsyncDatabase[Document]
) -> None:
    neither = await run_kindred(cli_env, "quarantine", "replay")
    assert neither.returncode == 2
    assert "--all" in neither.stderr
    unknown = await run_kindred(cli_env, "quarantine", "replay", "qtn_NOPE")
    assert unknown.returncode == 1
    assert "not in quarantine" in unknown.stderr
    assert "Traceback" not in neither.stderr + unknown.stderr


async def test_a_quarantined_raw_event_never_holds_the_write_key(
    client: httpx.AsyncClient, db: AsyncDatabase[Document], write_key: str
) -> None:
    body = {"writeKey": write_key, "batch": [{"type": "track", "userId": "u", "writeKey": "x"}]}
    response = await client.post("/v1/batch", json=body)
    assert response.status_code == 200
    [row] = await all_docs(db, "quarantine")
    assert "writeKey" not in json.loads(row["raw"])
    assert write_key not in row["raw"]
