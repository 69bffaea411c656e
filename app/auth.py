"""API keys: scopes, hashed storage, a verifying cache, and the FastAPI dependencies."""

import builtins
import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from http import HTTPStatus
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from fastapi import Depends, Request
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from app.mongo import Document
from profiles.errors import KindredError

API_KEYS = "api_keys"

INDEXES = {
    API_KEYS: [IndexModel([("hash", ASCENDING)], name="hash", unique=True)],
}

SECRET_PREFIX = "kdk_"
DEV_ADMIN_NAME = "local-admin"
MAX_NAME_LENGTH = 100

# Loose on length so a future, longer secret still parses; strict on alphabet so
# a header that cannot be a key is refused without a database round trip.
_SECRET = re.compile(rf"^{SECRET_PREFIX}[A-Za-z0-9_-]{{20,200}}$")


class Scope(StrEnum):
    """What an API key may do; `admin` implies every other scope."""

    PROFILES_READ = "profiles:read"
    PROFILES_WRITE = "profiles:write"
    ADMIN = "admin"


ALLOWED_SCOPES = ", ".join(Scope)


class Unauthorized(KindredError):
    """The request carries no API key, a malformed one, or one that is unknown or revoked."""

    code = "unauthorized"
    status = HTTPStatus.UNAUTHORIZED
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(KindredError):
    """The API key is valid but lacks the scope the operation needs."""

    code = "forbidden"
    status = HTTPStatus.FORBIDDEN

    def __init__(self, scope: Scope) -> None:
        super().__init__(f"This API key lacks the `{scope}` scope this operation needs.")
        self.scope = scope


class InvalidKeyInput(KindredError):
    """A key's name or scopes are not acceptable."""

    code = "invalid_request"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


@dataclass(frozen=True)
class ApiKey:
    """An API key as Kindred knows it; the secret itself is never stored."""

    id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None = None

    def allows(self, scope: Scope) -> bool:
        """Tells whether this key grants `scope`, which `admin` always does."""
        return Scope.ADMIN in self.scopes or scope in self.scopes


def hash_secret(secret: str) -> str:
    """Returns the stored form of a secret: its SHA-256, in hex."""
    # Secrets are 256 random bits, so a fast hash is enough: nothing can be
    # guessed or looked up in a table, and a slow KDF would cost every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def validated_name(name: str) -> str:
    """Returns `name` if it is 1 to 100 printable characters, else raises `InvalidKeyInput`."""
    if not 1 <= len(name) <= MAX_NAME_LENGTH or not name.isprintable() or not name.strip():
        raise InvalidKeyInput(
            f"A key name must be 1 to {MAX_NAME_LENGTH} printable characters, not all spaces."
        )
    return name


def validated_scopes(scopes: Iterable[Scope | str]) -> frozenset[Scope]:
    """Returns the scopes as a set of `Scope`, raising `InvalidKeyInput` for none or unknown."""
    parsed: set[Scope] = set()
    for scope in scopes:
        try:
            parsed.add(Scope(scope))
        except ValueError:
            raise InvalidKeyInput(
                f"Unknown scope {scope!r}; allowed scopes: {ALLOWED_SCOPES}."
            ) from None
    if not parsed:
        raise InvalidKeyInput(f"A key needs at least one scope; allowed scopes: {ALLOWED_SCOPES}.")
    return frozenset(parsed)


def _now() -> datetime:
    # MongoDB keeps milliseconds; truncating here makes a returned key equal the stored one.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _from_document(doc: Mapping[str, Any]) -> ApiKey:
    # A scope written by a newer Kindred grants nothing here rather than failing every request.
    known = {str(s) for s in Scope}
    return ApiKey(
        id=doc["_id"],
        name=doc["name"],
        scopes=frozenset(Scope(s) for s in doc["scopes"] if s in known),
        created_at=doc["created_at"],
        revoked_at=doc.get("revoked_at"),
    )


class KeyStore:
    """The API keys in one database; the only code that reads or writes `api_keys`."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._keys = db[API_KEYS]

    async def create(self, *, name: str, scopes: Iterable[Scope]) -> tuple[ApiKey, str]:
        """Creates a key and returns it with its secret, which nothing can show again."""
        key = ApiKey(
            id=f"key_{secrets.token_hex(8)}",
            name=validated_name(name),
            scopes=validated_scopes(scopes),
            created_at=_now(),
        )
        secret = f"{SECRET_PREFIX}{secrets.token_urlsafe(32)}"
        await self._keys.insert_one(
            {
                "_id": key.id,
                "name": key.name,
                "hash": hash_secret(secret),
                "scopes": sorted(scope.value for scope in key.scopes),
                "created_at": key.created_at,
                "revoked_at": None,
            }
        )
        return key, secret

    async def verify(self, secret: str) -> ApiKey | None:
        """Returns the unrevoked key whose secret this is, or None."""
        doc = await self._keys.find_one({"hash": hash_secret(secret), "revoked_at": None})
        return None if doc is None else _from_document(doc)

    async def revoke(self, key_id: str) -> bool:
        """Revokes a key (a revoked key stays revoked); returns False when no key has that id."""
        result = await self._keys.update_one(
            {"_id": key_id, "revoked_at": None}, {"$set": {"revoked_at": _now()}}
        )
        if result.matched_count:
            return True
        return await self._keys.find_one({"_id": key_id}, {"_id": 1}) is not None

    async def has_admin(self) -> bool:
        """Tells whether an unrevoked admin key exists."""
        found = await self._keys.find_one({"scopes": Scope.ADMIN.value, "revoked_at": None})
        return found is not None

    # Last in the class body: from here on `list` names this method, not the builtin.
    async def list(self) -> builtins.list[ApiKey]:
        """Returns every key, revoked ones included, oldest first."""
        cursor = self._keys.find({}, {"hash": 0}).sort([("created_at", ASCENDING), ("_id", 1)])
        return [_from_document(doc) async for doc in cursor]


T = TypeVar("T")


class VerifiedCache(Generic[T]):
    """Answers of a secret check, kept in this process for a while, keyed by the secret's hash.

    A positive answer lives `ttl` seconds (so a revoked secret keeps working that
    long here); a negative one `negative_ttl`, so a secret created elsewhere is
    accepted within seconds. The oldest entry makes room once `max_entries` are held.
    """

    def __init__(
        self,
        *,
        ttl: float = 30.0,
        negative_ttl: float = 2.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, T | None]] = {}

    def get(self, digest: str) -> tuple[bool, T | None]:
        """Returns (found, answer); `found` is False when nothing fresh is cached."""
        entry = self._entries.get(digest)
        if entry is None or entry[0] <= self._clock():
            return False, None
        return True, entry[1]

    def put(self, digest: str, answer: T | None) -> None:
        """Remembers an answer (None for an unknown secret)."""
        self._entries.pop(digest, None)
        # Dropping the oldest entry keeps the bound O(1); a flood of unknown keys
        # can only push out entries that the next lookup refills.
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        ttl = self._negative_ttl if answer is None else self._ttl
        self._entries[digest] = (self._clock() + ttl, answer)


class Authenticator:
    """Turns an `Authorization` header into an `ApiKey`, caching answers in this process.

    A revoked key keeps working here for up to `ttl` seconds (30 by default), until
    its cached answer expires; an unknown key is remembered for `negative_ttl` only,
    so a key created elsewhere is accepted within seconds.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        ttl: float = 30.0,
        negative_ttl: float = 2.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._cache = VerifiedCache[ApiKey](
            ttl=ttl, negative_ttl=negative_ttl, max_entries=max_entries, clock=clock
        )

    async def authenticate(self, authorization_header: str | None) -> ApiKey:
        """Returns the key a `Bearer` header names, or raises `Unauthorized`."""
        secret = _bearer_secret(authorization_header)
        digest = hash_secret(secret)
        found, key = self._cache.get(digest)
        if not found:
            key = await self._store.verify(secret)
            self._cache.put(digest, key)
        if key is None:
            raise Unauthorized(
                "Unknown or revoked API key; send a valid `Authorization: Bearer <key>` header."
            )
        return key


def _bearer_secret(authorization_header: str | None) -> str:
    if not authorization_header:
        raise Unauthorized("Missing API key; send a valid `Authorization: Bearer <key>` header.")
    scheme, _, secret = authorization_header.strip().partition(" ")
    secret = secret.strip()
    # The scheme is case-insensitive (RFC 7235).
    if scheme.lower() != "bearer" or not _SECRET.match(secret):
        raise Unauthorized(
            "Malformed Authorization header; send a valid `Authorization: Bearer <key>` header."
        )
    return secret


async def ensure_dev_admin_key(db: AsyncDatabase[Document]) -> str | None:
    """Creates a `local-admin` key when no admin key exists and returns its secret, else None."""
    store = KeyStore(db)
    if await store.has_admin():
        return None
    _, secret = await store.create(name=DEV_ADMIN_NAME, scopes=[Scope.ADMIN])
    return secret


async def current_key(request: Request) -> ApiKey:
    """Returns the API key the request authenticates with, or raises `Unauthorized`."""
    authenticator: Authenticator = request.app.state.kindred.authenticator
    return await authenticator.authenticate(request.headers.get("authorization"))


CurrentKey = Annotated[ApiKey, Depends(current_key)]


def require(scope: Scope) -> Callable[[ApiKey], Awaitable[ApiKey]]:
    """Returns a dependency that yields the request's key if it grants `scope`, else 403."""

    async def key_with_scope(key: CurrentKey) -> ApiKey:
        if not key.allows(scope):
            raise Forbidden(scope)
        return key

    return key_with_scope


ProfilesReadKey = Annotated[ApiKey, Depends(require(Scope.PROFILES_READ))]
ProfilesWriteKey = Annotated[ApiKey, Depends(require(Scope.PROFILES_WRITE))]
AdminKey = Annotated[ApiKey, Depends(require(Scope.ADMIN))]
