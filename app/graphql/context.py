"""The per-request GraphQL context; DataLoaders live here so their cache lasts one request."""

from fastapi import Request
from strawberry.fastapi import BaseContext

from app.state import KindredState


class Context(BaseContext):
    """What every resolver can reach."""

    def __init__(self, state: KindredState) -> None:
        super().__init__()
        self.state = state
        self.db = state.db


async def get_context(request: Request) -> Context:
    """Builds a fresh context for one GraphQL request."""
    return Context(request.app.state.kindred)
