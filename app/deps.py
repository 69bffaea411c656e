"""Typed FastAPI dependencies."""

from typing import Annotated

from fastapi import Depends, Request
from pymongo.asynchronous.database import AsyncDatabase

from app.mongo import Document
from app.state import KindredState


async def get_state(request: Request) -> KindredState:
    """Returns the app's lifetime state."""
    state: KindredState = request.app.state.kindred
    return state


async def get_database(request: Request) -> AsyncDatabase[Document]:
    """Returns the app's database handle."""
    state: KindredState = request.app.state.kindred
    return state.db


State = Annotated[KindredState, Depends(get_state)]
Database = Annotated[AsyncDatabase[Document], Depends(get_database)]
