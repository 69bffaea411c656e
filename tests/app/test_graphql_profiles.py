"""Reading profiles over GraphQL as templates and admin tools do."""

from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import Scope
from profiles.models import Observation
from profiles.service import ProfileService
from profiles.store import ProfileStore
from tests.conftest import AppFactory, http_client, make_settings
from tests.fixtures.factories import T0, seed_profile
from tests.fixtures.graphql import gql, key_headers

Db = AsyncDatabase[dict[str, Any]]


BY_EMAIL = """
query($email: String!) {
  profile(identity: {kind: "email", value: $email}) {
    __typename
    ... on Profile { id traits(keys: ["first_name", "city", "missing"])
                     trait(key: "city") { value source observedAt } identities { kind value } }
    ... on ProfileNotFound { message }
  }
}"""


async def test_a_template_reads_traits_by_email(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    pid = await seed_profile(
        db, {"email": "Ada@Example.com"}, {"first_name": "Ada", "city": "London"}
    )
    body = await gql(client, admin_headers, BY_EMAIL, email="ada@example.com")
    profile = body["data"]["profile"]
    assert profile["id"] == pid
    assert profile["traits"] == {"first_name": "Ada", "city": "London", "missing": None}
    assert profile["trait"] == {
        "value": "London",
        "source": "web",
        "observedAt": "2026-01-01T00:00:00+00:00",
    }
    assert profile["identities"] == [{"kind": "email", "value": "ada@example.com"}]


async def test_an_unknown_person_is_a_typed_not_found(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = await gql(client, admin_headers, BY_EMAIL, email="nobody@example.com")
    assert body["data"]["profile"]["__typename"] == "ProfileNotFound"
    assert "errors" not in body


async def test_profile_by_id_with_as_of_shows_the_past(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    pid = await seed_profile(db, {"user_id": "u1"}, {"city": "Paris"})
    await ProfileService(ProfileStore(db)).apply_batch(
        {pid: [Observation("city", "Lyon", T0 + timedelta(days=2), "web")]},
        now=T0 + timedelta(days=2),
    )
    query = """query($id: ID!, $at: DateTime) {
      profile(id: $id, asOf: $at) { ... on Profile { traits(keys: ["city"]) } } }"""
    then = await gql(client, admin_headers, query, id=pid, at="2026-01-02T00:00:00Z")
    now = await gql(client, admin_headers, query, id=pid)
    assert then["data"]["profile"]["traits"] == {"city": "Paris"}
    assert now["data"]["profile"]["traits"] == {"city": "Lyon"}


async def test_trait_history_pages_newest_first(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    pid = await seed_profile(db, {"user_id": "u1"})
    service = ProfileService(ProfileStore(db))
    await service.apply_observations(
        pid, [Observation("city", f"c{i}", T0 + timedelta(hours=i), "web") for i in range(5)]
    )
    query = """query($id: ID!, $after: String) { profile(id: $id) { ... on Profile {
      traitHistory(key: "city", first: 2, after: $after) {
        edges { cursor node { value source origin } } pageInfo { hasNextPage endCursor } } } } }"""
    seen: list[str] = []
    after = None
    for _ in range(5):
        body = await gql(client, admin_headers, query, id=pid, after=after)
        page = body["data"]["profile"]["traitHistory"]
        seen += [edge["node"]["value"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == ["c4", "c3", "c2", "c1", "c0"]


async def test_profiles_connection_pages_through_everyone_once(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    ids = {await seed_profile(db, {"user_id": f"u{i}"}, {"n": i}) for i in range(7)}
    query = """query($after: String) { profiles(first: 3, after: $after) {
      edges { cursor node { id traits(keys: ["n"]) } } pageInfo { hasNextPage endCursor } } }"""
    seen: list[str] = []
    after = None
    while True:
        page = (await gql(client, admin_headers, query, after=after))["data"]["profiles"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        assert all(edge["node"]["traits"]["n"] is not None for edge in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == 7


async def test_page_size_is_bounded_and_cursors_are_checked(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    too_big = await gql(client, admin_headers, "{ profiles(first: 100000) { edges { cursor } } }")
    forged = await gql(
        client, admin_headers, '{ profiles(first: 5, after: "bm9wZQ==x") { edges { cursor } } }'
    )
    assert "between 1 and 500" in too_big["errors"][0]["message"]
    assert too_big["errors"][0]["extensions"]["code"] == "invalid_page_size"
    assert forged["errors"][0]["extensions"]["code"] == "invalid_cursor"


async def test_a_bad_trait_key_is_an_error_naming_it(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    pid = await seed_profile(db, {"user_id": "u1"})
    body = await gql(
        client,
        admin_headers,
        'query($id: ID!) { profile(id: $id) { ... on Profile { traits(keys: ["$where"]) } } }',
        id=pid,
    )
    assert "'$where'" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"]["code"] == "invalid_trait_key"


async def test_graphql_needs_a_key_and_the_right_scope(client: httpx.AsyncClient, db: Db) -> None:
    query = '{ profile(id: "prf_x") { __typename } }'
    missing = await client.post("/graphql", json={"query": query})
    wrong = await client.post(
        "/graphql", json={"query": query}, headers={"authorization": "Bearer kdk_nope"}
    )
    writer = await gql(client, await key_headers(db, Scope.PROFILES_WRITE), query)
    reader = await gql(client, await key_headers(db, Scope.PROFILES_READ), query)
    assert missing.status_code == 401
    assert missing.json()["code"] == "unauthorized"
    assert wrong.status_code == 401
    assert "profiles:read" in writer["errors"][0]["message"]
    assert writer["data"] is None
    assert reader["data"]["profile"]["__typename"] == "ProfileNotFound"


async def test_only_admins_change_the_trait_catalog(client: httpx.AsyncClient, db: Db) -> None:
    mutation = """mutation { defineTrait(input: {key: "age", type: NUMBER, pii: false,
      description: "Age in years"}) { __typename ... on TraitDefinition { key type } } }"""
    reader = await gql(client, await key_headers(db, Scope.PROFILES_READ), mutation)
    admin = await gql(client, await key_headers(db, Scope.ADMIN), mutation)
    listed = await gql(client, await key_headers(db, Scope.ADMIN), "{ traitCatalog { key pii } }")
    assert "admin" in reader["errors"][0]["message"]
    assert admin["data"]["defineTrait"] == {
        "__typename": "TraitDefinition",
        "key": "age",
        "type": "NUMBER",
    }
    assert listed["data"]["traitCatalog"] == [{"key": "age", "pii": False}]


async def test_a_bad_catalog_entry_is_a_typed_error(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = await gql(
        client,
        admin_headers,
        'mutation { defineTrait(input: {key: "a.b", type: STRING}) { __typename '
        "... on InvalidInput { field message } } }",
    )
    assert body["data"]["defineTrait"]["__typename"] == "InvalidInput"
    assert "a.b" in body["data"]["defineTrait"]["message"]


async def test_aliased_lookups_are_batched_into_constant_round_trips(
    app: FastAPI, client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    for i in range(10):
        await seed_profile(db, {"email": f"p{i}@example.com"}, {"first_name": f"P{i}"})
    aliases = " ".join(
        f'p{i}: profile(identity: {{kind: "email", value: "p{i}@example.com"}}) '
        '{ ... on Profile { traits(keys: ["first_name"]) } }'
        for i in range(10)
    )
    await gql(client, admin_headers, f"{{ {aliases} }}")  # warms the key cache
    commands = app.state.kindred.metrics.db_seconds
    before = _command_count(commands)
    body = await gql(client, admin_headers, f"{{ {aliases} }}")
    after = _command_count(commands)
    assert [body["data"][f"p{i}"]["traits"]["first_name"] for i in range(10)] == [
        f"P{i}" for i in range(10)
    ]
    # One aggregate from the identities to their profiles, whatever the alias count.
    assert after - before == 1


def _command_count(histogram: Any) -> float:
    return sum(
        sample.value
        for metric in histogram.collect()
        for sample in metric.samples
        if sample.name.endswith("_count")
    )


async def test_query_depth_and_alias_limits_refuse_abuse(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    many = " ".join(f"a{i}: version" for i in range(150))
    aliases = await gql(client, admin_headers, f"{{ {many} }}")
    assert "aliases" in aliases["errors"][0]["message"].lower()


async def test_prod_masks_unexpected_errors_and_suggestions(
    app_factory: AppFactory, mongodb_uri: str, database_name: str, db: Db
) -> None:
    headers = await key_headers(db, Scope.ADMIN)
    async with (
        app_factory(make_settings(mongodb_uri, database_name, env="prod")) as app,
        http_client(app) as client,
    ):
        typo = await gql(client, headers, "{ profil { __typename } }")
    assert "Did you mean" not in typo["errors"][0]["message"]


async def test_old_ids_and_identifiers_resolve_to_the_merge_survivor(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    survivor = await seed_profile(db, {"user_id": "u1"}, {"first_name": "Ada"})
    merged = await seed_profile(db, {"email": "old@example.com"}, {"first_name": "A."})
    await db["profiles"].update_one({"_id": merged}, {"$set": {"merged_into": survivor}})
    query = """query($id: ID!) {
      byId: profile(id: $id) { ... on Profile { id traits(keys: ["first_name"]) } }
      byEmail: profile(identity: {kind: "email", value: "old@example.com"}) {
        ... on Profile { id traits(keys: ["first_name"]) } } }"""
    body = await gql(client, admin_headers, query, id=merged)
    expected = {"id": survivor, "traits": {"first_name": "Ada"}}
    assert body["data"] == {"byId": expected, "byEmail": expected}
