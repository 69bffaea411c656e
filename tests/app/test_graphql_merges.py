"""Admins merge, unmerge and review suggestions over GraphQL, and read the audit log."""

from typing import Any

import httpx
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import Scope
from tests.fixtures.factories import seed_look_alikes, seed_profile
from tests.fixtures.graphql import gql, key_headers

Db = AsyncDatabase[dict[str, Any]]

MERGE = """
mutation($s: ID!, $m: ID!, $reason: String!) {
  mergeProfiles(survivorId: $s, mergedId: $m, reason: $reason) {
    __typename
    ... on Merged {
      merge { id survivorId mergedId reason status actor { kind keyName } moved { identities } }
      profile { id identities { kind value } }
    }
    ... on MergeRefused { rule message }
    ... on InvalidInput { field message }
  }
}"""

UNMERGE = """
mutation($id: ID!, $reason: String!) {
  unmergeProfiles(mergeId: $id, reason: $reason) {
    __typename
    ... on Unmerged { merge { status undoReason undoneBy { kind } } profiles { id } }
    ... on MergeRefused { rule message }
    ... on InvalidInput { field message }
  }
}"""

MERGES = """
query($id: ID!) { merges(profileId: $id) { id status survivorId mergedId reason } }"""

AUDIT = """
query($after: String, $action: AuditAction) {
  adminAudit(first: 2, after: $after, action: $action) {
    edges { cursor node { action target outcome reason actor { kind keyName } profiles } }
    pageInfo { hasNextPage endCursor }
  }
}"""


async def test_an_admin_merges_and_unmerges_and_both_show_in_the_ledger(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    a, b, _ = await seed_look_alikes(db)
    body = await gql(client, admin_headers, MERGE, s=a, m=b, reason="same Ada")
    assert "errors" not in body, body
    merged = body["data"]["mergeProfiles"]
    assert merged["__typename"] == "Merged"
    assert merged["merge"]["actor"] == {"kind": "admin", "keyName": "test-admin"}
    assert merged["profile"]["id"] == a
    assert {i["value"] for i in merged["profile"]["identities"]} == {
        "ada@example.com",
        "ada.lovelace@example.org",
    }
    merge_id = merged["merge"]["id"]

    undone = (await gql(client, admin_headers, UNMERGE, id=merge_id, reason="two people"))["data"][
        "unmergeProfiles"
    ]
    assert undone["__typename"] == "Unmerged"
    assert undone["merge"] == {
        "status": "UNDONE",
        "undoReason": "two people",
        "undoneBy": {"kind": "admin"},
    }
    assert {p["id"] for p in undone["profiles"]} == {a, b}

    history = (await gql(client, admin_headers, MERGES, id=b))["data"]["merges"]
    assert history == [
        {"id": merge_id, "status": "UNDONE", "survivorId": a, "mergedId": b, "reason": "same Ada"}
    ]
    again = (await gql(client, admin_headers, UNMERGE, id=merge_id, reason="again"))["data"]
    assert again["unmergeProfiles"]["rule"] == "ALREADY_UNDONE"


async def test_refusals_and_bad_reasons_are_typed_results(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    a = await seed_profile(db, {"user_id": "u1"}, {"name": "Sam"})
    b = await seed_profile(db, {"user_id": "u2"}, {"name": "Sam"})
    refused = (await gql(client, admin_headers, MERGE, s=a, m=b, reason="same Sam"))["data"]
    assert refused["mergeProfiles"]["__typename"] == "MergeRefused"
    assert refused["mergeProfiles"]["rule"] == "DIFFERENT_USER_IDS"
    blank = (await gql(client, admin_headers, MERGE, s=a, m=b, reason=" "))["data"]
    assert blank["mergeProfiles"] == {
        "__typename": "InvalidInput",
        "field": "reason",
        "message": "give a reason of 1 to 500 printable characters",
    }
    missing = (await gql(client, admin_headers, UNMERGE, id="mrg_nope", reason="r"))["data"]
    assert missing["unmergeProfiles"]["rule"] == "MERGE_NOT_FOUND"


async def test_merging_needs_an_admin_key(client: httpx.AsyncClient, db: Db) -> None:
    a, b, _ = await seed_look_alikes(db)
    writer = await key_headers(db, Scope.PROFILES_READ, Scope.PROFILES_WRITE)
    body = await gql(client, writer, MERGE, s=a, m=b, reason="r")
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "forbidden"
    body = await gql(client, writer, MERGES, id=a)
    assert body["errors"][0]["extensions"]["code"] == "forbidden"


async def test_suggestions_are_accepted_or_rejected_and_every_decision_is_audited(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    a, b, sid = await seed_look_alikes(db)
    reject = """
    mutation($id: ID!, $reason: String!) {
      rejectSuggestion(id: $id, reason: $reason) {
        __typename
        ... on SuggestionRejected { suggestion { id status note } }
        ... on MergeRefused { rule }
      }
    }"""
    accept = """
    mutation($id: ID!) {
      acceptSuggestion(id: $id) { __typename ... on MergeRefused { rule message } }
    }"""
    rejected = (await gql(client, admin_headers, reject, id=sid, reason="twins"))["data"]
    assert rejected["rejectSuggestion"]["suggestion"]["status"] == "REJECTED"
    assert "twins" in rejected["rejectSuggestion"]["suggestion"]["note"]
    closed = (await gql(client, admin_headers, accept, id=sid))["data"]["acceptSuggestion"]
    assert closed == {
        "__typename": "MergeRefused",
        "rule": "SUGGESTION_CLOSED",
        "message": "that suggestion is rejected already",
    }
    # The admin changes their mind: an explicit merge is allowed despite the rejection.
    merged = await gql(client, admin_headers, MERGE, s=a, m=b, reason="same after all")
    assert merged["data"]["mergeProfiles"]["__typename"] == "Merged"

    first = (await gql(client, admin_headers, AUDIT))["data"]["adminAudit"]
    assert [e["node"]["action"] for e in first["edges"]] == ["MERGE", "ACCEPT_SUGGESTION"]
    assert [e["node"]["outcome"] for e in first["edges"]] == [
        "done",
        "refused:suggestion_closed",
    ]
    assert first["pageInfo"]["hasNextPage"]
    rest = await gql(client, admin_headers, AUDIT, after=first["pageInfo"]["endCursor"])
    [last] = rest["data"]["adminAudit"]["edges"]
    assert last["node"]["action"] == "REJECT_SUGGESTION"
    assert last["node"]["target"] == sid
    assert last["node"]["reason"] == "twins"
    assert sorted(last["node"]["profiles"]) == sorted([a, b])
    only = (await gql(client, admin_headers, AUDIT, action="REJECT_SUGGESTION"))["data"]
    assert len(only["adminAudit"]["edges"]) == 1
