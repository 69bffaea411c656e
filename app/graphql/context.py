"""The per-request GraphQL context; DataLoaders live here so their cache lasts one request."""

from collections.abc import Sequence

from fastapi import Request
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from app.auth import ApiKey
from app.state import KindredState
from profiles.models import Profile


class Context(BaseContext):
    """What every resolver can reach: the caller's key, services and per-request loaders."""

    def __init__(self, state: KindredState, api_key: ApiKey | None) -> None:
        super().__init__()
        self.state = state
        self.db = state.db
        self.api_key = api_key
        self.profile_service = state.profiles
        self.identity_store = state.identities
        self.profile_by_id: DataLoader[str, Profile | None] = DataLoader(self._load_profiles)
        self.profile_id_by_identity: DataLoader[str, str | None] = DataLoader(
            self._load_identity_owners
        )

    async def _load_profiles(self, ids: Sequence[str]) -> list[Profile | None]:
        found = await self.profile_service.store.get_many(ids)
        return [found.get(i) for i in ids]

    async def _load_identity_owners(self, keys: Sequence[str]) -> list[str | None]:
        owners = await self.identity_store.owners(keys)
        return [owners.get(k) for k in keys]


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
