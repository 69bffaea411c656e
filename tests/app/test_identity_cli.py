"""`kindred identities report` and `kindred dedupe` against the real database."""

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.eventlog import EVENTS
from identity.events import IdentityRules
from identity.graph import Limits
from tests.fixtures.cli import run_kindred
from tests.fixtures.events import builder_for, drain, event

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
