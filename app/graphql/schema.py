"""The GraphQL schema: one root assembled from the domain packages' types."""

import asyncio
from collections.abc import Callable
from enum import Enum

import strawberry
from pymongo.errors import PyMongoError
from strawberry.extensions import DisableIntrospection, SchemaExtension
from strawberry.fastapi import GraphQLRouter
from strawberry.schema.config import StrawberryConfig
from strawberry.types import Info

from app import __version__
from app.graphql.context import Context, get_context
from app.settings import Environment, Settings


@strawberry.enum
class DatabaseStatus(Enum):
    """Whether the database answers."""

    OK = "ok"
    UNREACHABLE = "unreachable"


@strawberry.type
class Health:
    """The service's readiness, as `/readyz` reports it."""

    ready: bool
    database: DatabaseStatus


@strawberry.type
class Query:
    """Read access for templates, scripts and the admin console."""

    @strawberry.field(description="The running Kindred version.")
    def version(self) -> str:
        return __version__

    @strawberry.field(description="Whether the service and its database are ready.")
    async def health(self, info: Info[Context, None]) -> Health:
        state = info.context.state
        try:
            await asyncio.wait_for(state.db.command("ping"), timeout=2)
            database = DatabaseStatus.OK
        except (PyMongoError, TimeoutError):
            database = DatabaseStatus.UNREACHABLE
        return Health(ready=state.ready.is_set(), database=database)


def build_schema(settings: Settings) -> strawberry.Schema:
    """Returns the schema with the extensions the environment calls for."""
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = []
    if settings.env is Environment.PROD:
        extensions.append(DisableIntrospection)
    return strawberry.Schema(
        query=Query,
        extensions=extensions,
        config=StrawberryConfig(auto_camel_case=True),
    )


def build_router(settings: Settings) -> GraphQLRouter[Context, None]:
    """Returns the `/graphql` router; the IDE is served in dev only."""
    return GraphQLRouter(
        build_schema(settings),
        context_getter=get_context,
        graphql_ide="graphiql" if settings.env is Environment.DEV else None,
        # Queries over GET could be triggered cross-site; POST only.
        allow_queries_via_get=False,
    )
