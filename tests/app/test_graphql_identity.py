"""Admins read identity reports and merge suggestions over GraphQL."""

from datetime import UTC, datetime
from typing import Any

import httpx
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import Scope
from app.eventlog import EVENTS
from identity.events import IdentityRules
from identity.graph import Limits
from identity.store import Proposal, SuggestionStore
from tests.fixtures.events import builder_for, drain, event
from tests.fixtures.factories import seed_profile
from tests.fixtures.graphql import gql, key_headers

Db = AsyncDatabase[dict[str, Any]]
NOW = datetime(2026, 3, 2, tzinfo=UTC)

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


SUGGESTIONS_QUERY = """
query($first: Int, $after: String, $minScore: Float) {
  mergeSuggestions(first: $first, after: $after, minScore: $minScore) {
    edges { cursor node {
      id score status source
      evidence { field level weight }
      profiles { id traits(keys: ["first_name"]) }
    } }
    pageInfo { hasNextPage endCursor }
  }
}"""


async def test_merge_suggestions_page_best_first_with_both_profiles_and_evidence(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    store = SuggestionStore(db)
    ids = [await seed_profile(db, {"crm_id": f"c{n}"}, {"first_name": f"P{n}"}) for n in range(4)]
    evidence = ({"field": "surname", "level": "exact", "weight": 7.5},)
    await store.record(
        [
            Proposal(ids[0], ids[1], 0.95, evidence),
            Proposal(ids[2], ids[3], 0.999, evidence),
            Proposal(ids[1], ids[2], 0.91, evidence),
        ],
        source="dedupe",
        now=NOW,
    )
    first = await gql(client, admin_headers, SUGGESTIONS_QUERY, first=2)
    assert "errors" not in first, first
    page = first["data"]["mergeSuggestions"]
    assert [e["node"]["score"] for e in page["edges"]] == [0.999, 0.95]
    top = page["edges"][0]["node"]
    assert {p["id"] for p in top["profiles"]} == {ids[2], ids[3]}
    assert top["evidence"] == [{"field": "surname", "level": "exact", "weight": 7.5}]
    assert set(top["profiles"][0]["traits"]) == {"first_name"}
    assert page["pageInfo"]["hasNextPage"] is True
    rest = await gql(
        client, admin_headers, SUGGESTIONS_QUERY, first=2, after=page["pageInfo"]["endCursor"]
    )
    assert [e["node"]["score"] for e in rest["data"]["mergeSuggestions"]["edges"]] == [0.91]
    above = await gql(client, admin_headers, SUGGESTIONS_QUERY, minScore=0.94)
    assert len(above["data"]["mergeSuggestions"]["edges"]) == 2


async def test_a_score_bound_outside_zero_to_one_is_an_error_naming_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = await gql(client, admin_headers, SUGGESTIONS_QUERY, minScore=1.5)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "invalid_score"
    assert "minScore" in error["message"]
