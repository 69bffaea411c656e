"""Segments over GraphQL: definitions with versions, members, history, variants."""

from typing import Any

import httpx
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import Scope
from app.eventlog import EVENTS
from tests.fixtures.events import builder_for, drain, event
from tests.fixtures.graphql import gql, key_headers

Db = AsyncDatabase[dict[str, Any]]

CREATE = """
mutation($input: SegmentInput!) {
  createSegment(input: $input) {
    __typename
    ... on Segment { id version size definition }
    ... on InvalidInput { field message }
  }
}"""

UPDATE = """
mutation($id: ID!, $input: SegmentInput!, $v: Int) {
  updateSegment(id: $id, input: $input, expectedVersion: $v) {
    __typename
    ... on Segment { version size }
    ... on SegmentConflict { version message }
    ... on SegmentNotFound { message }
  }
}"""

READ = """
query($id: ID!) {
  segment(id: $id) {
    name version size
    members(first: 1) {
      edges { cursor node { id traits(keys: ["plan"]) segments } }
      pageInfo { hasNextPage endCursor }
    }
    history(first: 10) { edges { node { change segmentVersion cause profileId } } }
  }
}"""

PRO = {"version": 1, "rule": {"type": "trait", "key": "plan", "op": "eq", "value": "pro"}}


async def test_segments_are_created_versioned_read_and_paged(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    await db[EVENTS].insert_many(
        [event("identify", user_id=f"u{n}", traits={"plan": "pro"}, at=n) for n in range(2)]
    )
    await drain(builder_for(db))
    body = await gql(client, admin_headers, CREATE, input={"name": "Pro", "definition": PRO})
    created = body["data"]["createSegment"]
    assert created["__typename"] == "Segment", body
    assert (created["version"], created["size"]) == (1, 2)
    sid = created["id"]

    reader = await key_headers(db, Scope.PROFILES_READ)
    page = (await gql(client, reader, READ, id=sid))["data"]["segment"]
    assert page["size"] == 2
    [edge] = page["members"]["edges"]
    assert edge["node"]["traits"] == {"plan": "pro"}
    assert edge["node"]["segments"] == [sid]
    assert page["members"]["pageInfo"]["hasNextPage"]
    assert [e["node"]["change"] for e in page["history"]["edges"]] == ["ENTERED", "ENTERED"]
    assert page["history"]["edges"][0]["node"]["cause"] == {"kind": "recompute"}

    nobody = {"version": 1, "rule": {"type": "trait", "key": "plan", "op": "eq", "value": "x"}}
    stale = await gql(
        client, admin_headers, UPDATE, id=sid, input={"name": "Pro", "definition": nobody}, v=7
    )
    assert stale["data"]["updateSegment"]["__typename"] == "SegmentConflict"
    assert stale["data"]["updateSegment"]["version"] == 1
    updated = await gql(
        client, admin_headers, UPDATE, id=sid, input={"name": "Pro", "definition": nobody}, v=1
    )
    assert updated["data"]["updateSegment"] == {"__typename": "Segment", "version": 2, "size": 0}

    profile_query = """
    query($id: ID!) {
      profile(id: $id) {
        ... on Profile {
          segments
          segmentHistory(first: 5) { edges { node { change segmentVersion } } }
          a: variant(experiment: "subject-line")
          b: variant(experiment: "subject-line")
          held: variant(experiment: "x", arms: ["only"], holdout: 0.0)
        }
      }
    }"""
    pid = edge["node"]["id"]
    profile = (await gql(client, reader, profile_query, id=pid))["data"]["profile"]
    assert profile["segments"] == []
    assert [e["node"]["change"] for e in profile["segmentHistory"]["edges"]] == [
        "EXITED",
        "ENTERED",
    ]
    assert profile["segmentHistory"]["edges"][0]["node"]["segmentVersion"] == 2
    assert profile["a"] == profile["b"] in {"control", "treatment"}
    assert profile["held"] == "only"


async def test_a_bad_rule_is_an_input_error_naming_where_and_writes_nothing(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    bad = {
        "version": 1,
        "rule": {"type": "all", "of": [{"type": "trait", "key": "$where", "op": "eq", "value": 1}]},
    }
    body = await gql(client, admin_headers, CREATE, input={"name": "Bad", "definition": bad})
    result = body["data"]["createSegment"]
    assert result["__typename"] == "InvalidInput"
    assert result["field"] == "input.definition"
    assert "rule.of[0]" in result["message"]
    assert (await gql(client, admin_headers, "{ segments { id } }"))["data"]["segments"] == []


async def test_writing_segments_needs_an_admin_key(client: httpx.AsyncClient, db: Db) -> None:
    reader = await key_headers(db, Scope.PROFILES_READ)
    body = await gql(client, reader, CREATE, input={"name": "Pro", "definition": PRO})
    assert body["errors"][0]["extensions"]["code"] == "forbidden"
