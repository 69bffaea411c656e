"""`kindred identities report` and `kindred dedupe` against the real database."""

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.eventlog import EVENTS
from identity.events import IdentityRules
from identity.graph import Limits
from identity.matching_service import FUZZY_MERGE_RULE
from identity.store import MERGES, SUGGESTIONS
from profiles.store import PROFILES
from tests.fixtures.cli import run_kindred
from tests.fixtures.events import builder_for, drain, event
from tests.fixtures.factories import seed_profile

Db = AsyncDatabase[dict[str, Any]]


async def test_the_report_counts_profiles_by_validation_reason(
    cli_env: dict[str, str], db: Db
) -> None:
    await db[EVENTS].insert_many(
        [
            event("identify", user_id="u1", traits={"email": "ada@example.com"}),
            event("identify", user_id="u2", traits={"email": "bob.example.com"}),
            event("identify", user_id="u3", traits={"email": "cy.example.com"}),
            event("identify", user_id="u4", traits={"email": "test@test.com", "phone": "12"}),
            *[event("identify", user_id=f"k{n}", anonymous_id="kiosk", at=n) for n in range(3)],
        ]
    )
    await drain(builder_for(db, rules=IdentityRules(limits=Limits(shared_after=2))))
    result = await run_kindred(cli_env, "identities", "report")
    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.replace("│", " ").split()) for line in result.stdout.splitlines()]
    assert "email valid 1" in lines
    assert "email invalid missing_at 2" in lines
    assert "email blocked blocked 1" in lines
    assert "phone invalid too_short 1" in lines
    assert any(line.startswith("anonymous_id kiosk 3 ") for line in lines), result.stdout


async def test_dedupe_merges_suggests_and_is_rerunnable(cli_env: dict[str, str], db: Db) -> None:
    person = {
        "first_name": "Katherine",
        "last_name": "Johnson",
        "address": "12 Baker Street",
        "postcode": "SW1A 1AA",
        "birthday": "1980-04-02",
    }
    sure = await seed_profile(db, {"crm_id": "c1"}, {**person, "email": "kj@example.com"})
    twin = await seed_profile(db, {"crm_id": "c2"}, {**person, "email": "KJ@example.com"})
    await seed_profile(db, {"crm_id": "c3"}, {**person, "first_name": "Catherine"})

    dry = await run_kindred(cli_env, "dedupe", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert _row(dry.stdout, "automatic merges (would be)") == "1"
    assert await db[PROFILES].count_documents({"merged_into": {"$ne": None}}) == 0

    first = await run_kindred(cli_env, "dedupe")
    assert first.returncode == 0, first.stderr
    assert _row(first.stdout, "automatic merges") == "1"
    merged = await db[PROFILES].find_one({"_id": twin})
    assert merged is not None
    assert merged["merged_into"] == sure
    ledger = await db[MERGES].find_one({"merged": twin})
    assert ledger is not None
    assert ledger["evidence"]
    assert ledger["actor"] == {"kind": "automatic", "rule": FUZZY_MERGE_RULE}

    again = await run_kindred(cli_env, "dedupe")
    assert again.returncode == 0, again.stderr
    assert _row(again.stdout, "of which new") == "0"
    assert _row(again.stdout, "automatic merges") == "0"
    assert await db[SUGGESTIONS].count_documents({}) == int(_row(first.stdout, "of which new"))


def _row(table: str, label: str) -> str:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[0] == label:
            return cells[1]
    raise AssertionError(f"no row {label!r} in:\n{table}")
