"""`kindred segments`: templates in one command, recomputes, streaming exports."""

import csv
import io
import json
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.eventlog import EVENTS
from profiles.segments.store import SEGMENTS
from profiles.segments.templates import TEMPLATES
from tests.fixtures.cli import run_kindred
from tests.fixtures.events import builder_for, drain, event

Db = AsyncDatabase[dict[str, Any]]


async def test_templates_install_in_one_command_and_again_change_nothing(
    db: Db, cli_env: dict[str, str]
) -> None:
    first = await run_kindred(cli_env, "segments", "templates")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("installed") == len(TEMPLATES)
    again = await run_kindred(cli_env, "segments", "templates")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("present") == len(TEMPLATES)
    assert await db[SEGMENTS].count_documents({}) == len(TEMPLATES)


async def test_export_streams_members_as_csv_or_jsonl_and_mailable_keeps_contactable_ones(
    db: Db, cli_env: dict[str, str], tmp_path: Any
) -> None:
    await db[EVENTS].insert_many(
        [
            event(
                "identify",
                user_id=f"u{n}",
                traits={"email": f"p{n}@example.com", "plan": "pro", "first_name": f"P{n}"},
                at=n,
            )
            for n in range(3)
        ]
    )
    await drain(builder_for(db))
    # Only p0 may be emailed: p1 unsubscribed, p2 never consented.
    await db["profiles"].update_many(
        {}, {"$set": {"consent.email_marketing": {"status": "granted"}}}
    )
    await db["profiles"].update_one(
        {"traits.email.value": "p1@example.com"},
        {"$set": {"traits.unsubscribed": {"value": True, "observed_at": None, "source": "test"}}},
    )
    await db["profiles"].update_one(
        {"traits.email.value": "p2@example.com"}, {"$unset": {"consent.email_marketing": ""}}
    )
    definition = tmp_path / "pro.json"
    definition.write_text(
        json.dumps(
            {"version": 1, "rule": {"type": "trait", "key": "plan", "op": "eq", "value": "pro"}}
        )
    )
    created = await run_kindred(
        cli_env, "segments", "create", "--name", "Pro", "--definition", str(definition)
    )
    assert created.returncode == 0, created.stderr
    assert "3 members" in created.stdout
    segment_id = created.stdout.split()[1]

    as_csv = await run_kindred(cli_env, "segments", "export", segment_id, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert sorted(r["email"] for r in rows) == [f"p{n}@example.com" for n in range(3)]
    assert "exported 3 members" in as_csv.stderr

    mailable = await run_kindred(
        cli_env,
        "segments",
        "export",
        segment_id,
        "--format",
        "jsonl",
        "--mailable",
        "--traits",
        "email",
    )
    assert mailable.returncode == 0, mailable.stderr
    lines = [json.loads(line) for line in mailable.stdout.splitlines()]
    assert [line["email"] for line in lines] == ["p0@example.com"]

    bad = await run_kindred(cli_env, "segments", "export", segment_id, "--traits", "a.b")
    assert bad.returncode == 2
    assert "--traits" in bad.stderr


async def test_a_bad_definition_is_refused_naming_where(
    db: Db, cli_env: dict[str, str], tmp_path: Any
) -> None:
    definition = tmp_path / "bad.json"
    definition.write_text(
        json.dumps({"version": 1, "rule": {"type": "trait", "key": "plan", "op": "equals"}})
    )
    result = await run_kindred(
        cli_env, "segments", "create", "--name", "Bad", "--definition", str(definition)
    )
    assert result.returncode == 2
    assert "rule.op" in result.stderr
    assert await db[SEGMENTS].count_documents({}) == 0
