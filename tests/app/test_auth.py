"""API keys: hashed storage, scopes, revocation, the verifying cache, and HTTP answers."""

import hashlib
import secrets
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends
from pymongo.asynchronous.database import AsyncDatabase

from app.auth import (
    ApiKey,
    Authenticator,
    InvalidKeyInput,
    KeyStore,
    Scope,
    Unauthorized,
    ensure_dev_admin_key,
    require,
)
from app.mongo import Document
from app.settings import Settings
from tests.conftest import AppFactory, http_client

PROBE = "/probe"


class CountingStore(KeyStore):
    """A real key store that counts how often it is asked to verify a secret."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        self.lookups = 0

    async def verify(self, secret: str) -> ApiKey | None:
        self.lookups += 1
        return await super().verify(secret)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bearer(secret: str) -> str:
    return f"Bearer {secret}"


def unknown_secret() -> str:
    return f"kdk_{secrets.token_urlsafe(32)}"


@pytest.fixture
async def probe(
    app_factory: AppFactory, settings: Settings, db: AsyncDatabase[Document]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client for a Kindred app with one route that needs `profiles:read`."""
    async with app_factory(settings) as app:

        @app.get(PROBE)
        async def probe_route(
            key: Annotated[ApiKey, Depends(require(Scope.PROFILES_READ))],
        ) -> dict[str, str]:
            return {"key": key.id}

        async with http_client(app) as client:
            yield client


async def test_a_created_key_verifies_with_its_secret(db: AsyncDatabase[Document]) -> None:
    store = KeyStore(db)
    key, secret = await store.create(name="ci", scopes=[Scope.PROFILES_READ])
    assert secret.startswith("kdk_")
    assert key.id.startswith("key_")
    assert len(key.id) == len("key_") + 16
    assert await store.verify(secret) == key
    assert await store.verify(unknown_secret()) is None


async def test_the_stored_document_holds_a_hash_not_the_secret(
    db: AsyncDatabase[Document],
) -> None:
    key, secret = await KeyStore(db).create(name="ci", scopes=[Scope.ADMIN])
    raw = await db["api_keys"].find_one({"_id": key.id})
    assert raw is not None
    assert secret not in repr(raw)
    assert secret.removeprefix("kdk_") not in repr(raw)
    assert raw["hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert raw["scopes"] == ["admin"]
    assert raw["revoked_at"] is None


async def test_a_revoked_key_is_refused(db: AsyncDatabase[Document]) -> None:
    store = KeyStore(db)
    key, secret = await store.create(name="ci", scopes=[Scope.PROFILES_READ])
    assert await store.revoke(key.id)
    assert await store.verify(secret) is None
    [listed] = await store.list()
    assert listed.revoked_at is not None
    assert await store.revoke(key.id), "revoking twice still names an existing key"


async def test_revoking_an_unknown_key_reports_it(db: AsyncDatabase[Document]) -> None:
    assert not await KeyStore(db).revoke("key_0000000000000000")


async def test_admin_allows_every_scope(db: AsyncDatabase[Document]) -> None:
    admin, _ = await KeyStore(db).create(name="root", scopes=[Scope.ADMIN])
    reader, _ = await KeyStore(db).create(name="reader", scopes=[Scope.PROFILES_READ])
    assert all(admin.allows(scope) for scope in Scope)
    assert reader.allows(Scope.PROFILES_READ)
    assert not reader.allows(Scope.PROFILES_WRITE)
    assert not reader.allows(Scope.ADMIN)


@pytest.mark.parametrize(
    ("name", "scopes"),
    [
        ("", [Scope.ADMIN]),
        ("   ", [Scope.ADMIN]),
        ("x" * 101, [Scope.ADMIN]),
        ("line\nbreak", [Scope.ADMIN]),
        ("ci", []),
        ("ci", ["profiles:delete"]),
    ],
)
async def test_create_refuses_a_bad_name_or_scope(
    db: AsyncDatabase[Document], name: str, scopes: list[Scope]
) -> None:
    with pytest.raises(InvalidKeyInput):
        await KeyStore(db).create(name=name, scopes=scopes)
    assert await KeyStore(db).list() == []


async def test_list_returns_every_key_oldest_first(db: AsyncDatabase[Document]) -> None:
    store = KeyStore(db)
    first, _ = await store.create(name="first", scopes=[Scope.PROFILES_READ])
    second, _ = await store.create(name="second", scopes=[Scope.PROFILES_WRITE])
    assert await store.list() == [first, second]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-key",
        unknown_secret(),
        bearer(unknown_secret()),
    ],
    ids=["missing", "basic", "empty-bearer", "not-a-key", "no-scheme", "unknown"],
)
async def test_a_request_without_a_valid_key_is_401(
    probe: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    response = await probe.get(PROBE, headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "unauthorized"
    assert "Authorization: Bearer <key>" in body["message"]
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_key_without_the_scope_is_403_naming_it(
    probe: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    _, secret = await KeyStore(db).create(name="writer", scopes=[Scope.PROFILES_WRITE])
    response = await probe.get(PROBE, headers={"authorization": bearer(secret)})
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "forbidden"
    assert "profiles:read" in body["message"]
    assert "www-authenticate" not in response.headers


async def test_a_key_with_the_scope_is_served(
    probe: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    key, secret = await KeyStore(db).create(name="reader", scopes=[Scope.PROFILES_READ])
    response = await probe.get(PROBE, headers={"authorization": bearer(secret)})
    assert response.status_code == 200
    assert response.json() == {"key": key.id}


async def test_the_scheme_is_case_insensitive(
    probe: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    _, secret = await KeyStore(db).create(name="reader", scopes=[Scope.PROFILES_READ])
    response = await probe.get(PROBE, headers={"authorization": f"bearer {secret}"})
    assert response.status_code == 200


async def test_admin_headers_pass_any_scope_check(
    probe: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await probe.get(PROBE, headers=admin_headers)
    assert response.status_code == 200


async def test_the_authenticator_serves_a_repeated_key_from_its_cache(
    db: AsyncDatabase[Document],
) -> None:
    store = CountingStore(db)
    key, secret = await store.create(name="hot", scopes=[Scope.PROFILES_READ])
    authenticator = Authenticator(store)
    for _ in range(5):
        assert await authenticator.authenticate(bearer(secret)) == key
    assert store.lookups == 1


async def test_a_malformed_header_costs_no_lookup(db: AsyncDatabase[Document]) -> None:
    store = CountingStore(db)
    authenticator = Authenticator(store)
    for header in (None, "", "Basic abc", "Bearer kdk_short", "Bearer x y"):
        with pytest.raises(Unauthorized):
            await authenticator.authenticate(header)
    assert store.lookups == 0


async def test_a_revoked_key_is_refused_once_its_cache_entry_expires(
    db: AsyncDatabase[Document],
) -> None:
    store = CountingStore(db)
    key, secret = await store.create(name="leaving", scopes=[Scope.PROFILES_READ])
    clock = Clock()
    authenticator = Authenticator(store, ttl=30, clock=clock)
    await authenticator.authenticate(bearer(secret))
    await store.revoke(key.id)
    clock.now += 29
    assert await authenticator.authenticate(bearer(secret)) == key, "the documented delay"
    clock.now += 2
    with pytest.raises(Unauthorized):
        await authenticator.authenticate(bearer(secret))


async def test_an_unknown_key_is_remembered_only_briefly(db: AsyncDatabase[Document]) -> None:
    store = CountingStore(db)
    clock = Clock()
    authenticator = Authenticator(store, negative_ttl=2, clock=clock)
    secret = unknown_secret()
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await authenticator.authenticate(bearer(secret))
    assert store.lookups == 1
    clock.now += 2.5
    with pytest.raises(Unauthorized):
        await authenticator.authenticate(bearer(secret))
    assert store.lookups == 2


async def test_the_cache_holds_at_most_its_bound(db: AsyncDatabase[Document]) -> None:
    store = CountingStore(db)
    created = [await store.create(name=f"k{i}", scopes=[Scope.ADMIN]) for i in range(3)]
    authenticator = Authenticator(store, max_entries=2)
    for _, secret in created:
        await authenticator.authenticate(bearer(secret))
    assert store.lookups == 3
    await authenticator.authenticate(bearer(created[2][1]))
    assert store.lookups == 3, "a recent key stays cached"
    await authenticator.authenticate(bearer(created[0][1]))
    assert store.lookups == 4, "the oldest key was evicted"


async def test_the_dev_admin_key_is_created_once(db: AsyncDatabase[Document]) -> None:
    secret = await ensure_dev_admin_key(db)
    assert secret is not None
    key = await KeyStore(db).verify(secret)
    assert key is not None
    assert key.name == "local-admin"
    assert key.scopes == {Scope.ADMIN}
    assert await ensure_dev_admin_key(db) is None
    assert len(await KeyStore(db).list()) == 1


async def test_a_revoked_admin_key_does_not_count_as_one(db: AsyncDatabase[Document]) -> None:
    store = KeyStore(db)
    admin, _ = await store.create(name="old-admin", scopes=[Scope.ADMIN])
    await store.create(name="reader", scopes=[Scope.PROFILES_READ])
    assert await store.has_admin()
    await store.revoke(admin.id)
    assert not await store.has_admin()
    assert await ensure_dev_admin_key(db) is not None
