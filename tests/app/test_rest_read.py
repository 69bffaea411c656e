"""The template-friendly REST read, as an ESP's send-time lookup uses it."""

from typing import Any

import httpx
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import KeyStore, Scope
from tests.fixtures.factories import seed_profile

Db = AsyncDatabase[dict[str, Any]]


async def test_fields_come_back_as_flat_json_with_cache_headers(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    pid = await seed_profile(
        db, {"email": "ada@example.com"}, {"first_name": "Ada", "city": "London", "age": 36}
    )
    response = await client.get(
        "/v1/profiles/email/ADA@example.com",
        params={"fields": "first_name,city,unknown"},
        headers=admin_headers,
    )
    assert response.status_code == 200
    assert response.json() == {"id": pid, "first_name": "Ada", "city": "London", "unknown": None}
    assert response.headers["etag"].startswith('"')
    assert response.headers["cache-control"] == "private, max-age=60"


async def test_an_unchanged_profile_answers_304_to_its_etag(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    await seed_profile(db, {"user_id": "u1"}, {"first_name": "Ada"})
    first = await client.get("/v1/profiles/user_id/u1", headers=admin_headers)
    again = await client.get(
        "/v1/profiles/user_id/u1",
        headers=admin_headers | {"if-none-match": first.headers["etag"]},
    )
    assert again.status_code == 304
    assert again.content == b""


async def test_an_unknown_person_is_404_with_the_error_shape(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.get("/v1/profiles/email/nobody@example.com", headers=admin_headers)
    assert response.status_code == 404
    assert response.json() == {
        "code": "profile_not_found",
        "message": "no profile has that email",
    }


async def test_a_bad_field_name_is_422_naming_it(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    await seed_profile(db, {"user_id": "u1"})
    response = await client.get(
        "/v1/profiles/user_id/u1", params={"fields": "city,$where"}, headers=admin_headers
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_trait_key"
    assert "$where" in response.json()["message"]


async def test_the_rest_read_needs_a_read_key(client: httpx.AsyncClient, db: Db) -> None:
    _, writer = await KeyStore(db).create(name="w", scopes=[Scope.PROFILES_WRITE])
    missing = await client.get("/v1/profiles/user_id/u1")
    wrong = await client.get(
        "/v1/profiles/user_id/u1", headers={"authorization": f"Bearer {writer}"}
    )
    assert missing.status_code == 401
    assert wrong.status_code == 403
    assert wrong.json()["code"] == "forbidden"


async def test_a_bad_identifier_kind_is_422_naming_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.get("/v1/profiles/$where/x", headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_identifier"
    assert "$where" in response.json()["message"]


async def test_an_identifier_of_a_merged_away_profile_reads_the_survivor(
    client: httpx.AsyncClient, db: Db, admin_headers: dict[str, str]
) -> None:
    survivor = await seed_profile(db, {"user_id": "u1"}, {"first_name": "Ada"})
    merged = await seed_profile(db, {"email": "old@example.com"}, {"first_name": "A."})
    # A tombstone as merges leave them: the old profile points at its survivor.
    await db["profiles"].update_one({"_id": merged}, {"$set": {"merged_into": survivor}})
    response = await client.get(
        "/v1/profiles/email/old@example.com", params={"fields": "first_name"}, headers=admin_headers
    )
    assert response.json() == {"id": survivor, "first_name": "Ada"}
