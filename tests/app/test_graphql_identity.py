"""Admins read identity reports and merge suggestions over GraphQL."""

from typing import Any

import httpx
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import Scope
from app.eventlog import EVENTS
from identity.events import IdentityRules
from identity.graph import Limits
from tests.fixtures.events import builder_for, drain, event
from tests.fixtures.graphql import gql, key_headers

Db = AsyncDatabase[dict[str, Any]]

REPORT = """
{
  validationReport { field status reason profiles }
  sharedIdentifiers { kind value people heldBy deviceProfile }
}"""


async def test_the_validation_report_counts_profiles_per_reason(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    await db[EVENTS].insert_many(
        [
            event("identify", user_id="u1", traits={"email": "ada@example.com"}),
            event("identify", user_id="u2", traits={"email": "ada.example.com"}),
            *[event("identify", user_id=f"k{n}", anonymous_id="kiosk", at=n) for n in range(3)],
        ]
    )
    await drain(builder_for(db, rules=IdentityRules(limits=Limits(shared_after=2))))
    body = await gql(client, admin_headers, REPORT)
    assert "errors" not in body, body
    counts = {
        (r["field"], r["status"], r["reason"]): r["profiles"]
        for r in body["data"]["validationReport"]
    }
    assert counts == {("email", "valid", None): 1, ("email", "invalid", "missing_at"): 1}
    [shared] = body["data"]["sharedIdentifiers"]
    assert (shared["kind"], shared["value"], shared["people"]) == ("anonymous_id", "kiosk", 3)


async def test_identity_reports_need_the_admin_scope(client: httpx.AsyncClient, db: Db) -> None:
    headers = await key_headers(db, Scope.PROFILES_READ)
    body = await gql(client, headers, REPORT)
    assert body["data"] is None
    assert {e["extensions"]["code"] for e in body["errors"]} == {"forbidden"}
