"""The per-request GraphQL context; DataLoaders live here so their cache lasts one request."""

from collections import defaultdict
from collections.abc import Awaitable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from fastapi import Request
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from app.auth import ApiKey
from app.eventlog import EventLog
from app.state import KindredState
from profiles.models import Profile

# A profile id or identity key, and the trait keys to read (None: all of them).
ProfileKey = tuple[str, tuple[str, ...] | None]


class Context(BaseContext):
    """What every resolver can reach: the caller's key, services and per-request loaders."""

    def __init__(self, state: KindredState, api_key: ApiKey | None) -> None:
        super().__init__()
        self.state = state
        self.db = state.db
        self.api_key = api_key
        self.profile_service = state.profiles
        self.identity_store = state.identities
        self.segments = state.segments
        self.events = EventLog(state.db)
        self.profile_by_id: DataLoader[ProfileKey, Profile | None] = DataLoader(self._load_profiles)
        self.profile_by_identity: DataLoader[ProfileKey, Profile | None] = DataLoader(
            self._load_profiles_by_identity
        )

    async def recent_events(
        self, profile_id: str, *, first: int, before: tuple[datetime, str] | None, name: str | None
    ) -> list[dict[str, Any]]:
        """Returns a profile's events, newest first, after a cursor position."""
        return await self.events.recent(profile_id, first=first, before=before, name=name)

    async def _load_profiles(self, keys: Sequence[ProfileKey]) -> list[Profile | None]:
        return await _by_projection(keys, self.profile_service.store.get_many)

    async def _load_profiles_by_identity(self, keys: Sequence[ProfileKey]) -> list[Profile | None]:
        return await _by_projection(keys, self.identity_store.profiles_for)


class _Fetch(Protocol):
    def __call__(
        self, ids: Iterable[str], /, *, trait_keys: Iterable[str] | None = None
    ) -> Awaitable[dict[str, Profile]]: ...


async def _by_projection(keys: Sequence[ProfileKey], fetch: _Fetch) -> list[Profile | None]:
    # One query per distinct projection; a request normally has one.
    by_projection: dict[tuple[str, ...] | None, list[str]] = defaultdict(list)
    for lookup, trait_keys in keys:
        by_projection[trait_keys].append(lookup)
    found: dict[ProfileKey, Profile] = {}
    for trait_keys, lookups in by_projection.items():
        profiles = await fetch(lookups, trait_keys=trait_keys)
        found.update(((lookup, trait_keys), p) for lookup, p in profiles.items())
    return [found.get(key) for key in keys]


async def get_context(request: Request) -> Context:
    """Authenticates the caller (401 without a valid key) and builds its request's context.

    GET only serves the GraphiQL page (queries over GET are refused), which a
    browser loads without a key; the page then sends the key with each POST.
    """
    state: KindredState = request.app.state.kindred
    if request.method == "GET":
        return Context(state, None)
    api_key = await state.authenticator.authenticate(request.headers.get("authorization"))
    return Context(state, api_key)
