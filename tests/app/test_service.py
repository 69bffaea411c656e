"""The service's operational endpoints: health, readiness, metrics, GraphQL, errors."""

import httpx
from fastapi import FastAPI

from app import __version__
from app.embedded import free_port
from tests.conftest import AppFactory, http_client, make_settings


async def test_healthz_answers_while_the_process_runs(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_once_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_readyz_is_503_while_the_database_is_unreachable(
    app_factory: AppFactory, database_name: str
) -> None:
    nowhere = f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=200"
    async with (
        app_factory(make_settings(nowhere, database_name), wait_ready=False) as app,
        http_client(app) as client,
    ):
        response = await client.get("/readyz")
        healthz = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "starting"}
    assert healthz.status_code == 200


async def test_every_declared_index_exists_once_ready(app: FastAPI) -> None:
    from app.mongo import index_registry

    db = app.state.kindred.db
    for declarations in index_registry():
        for collection, models in declarations.items():
            names = {ix["name"] async for ix in await db[collection].list_indexes()}
            assert {m.document["name"] for m in models} <= names


async def test_metrics_count_requests_by_route_and_time_database_commands(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/readyz")
    await client.get("/no/such/page")
    text = (await client.get("/metrics")).text
    assert 'kindred_http_requests_total{method="GET",route="/readyz",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert 'duration_seconds_bucket{le="0.005",method="GET",route="/readyz"' in text
    assert 'kindred_db_operation_duration_seconds_count{command="ping",outcome="ok"}' in text


async def test_graphql_reports_version_and_health(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    query = "{ version health { ready database } }"
    response = await client.post("/graphql", json={"query": query}, headers=admin_headers)
    assert response.json() == {
        "data": {"version": __version__, "health": {"ready": True, "database": "OK"}}
    }


async def test_graphql_ide_and_introspection_are_on_in_dev(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    ide = await client.get("/graphql", headers={"accept": "text/html"})
    introspection = await client.post(
        "/graphql", json={"query": "{ __schema { queryType { name } } }"}, headers=admin_headers
    )
    assert ide.status_code == 200
    assert "graphiql" in ide.text.lower()
    assert introspection.json()["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_prod_turns_off_the_graphql_ide_and_introspection(
    app_factory: AppFactory, mongodb_uri: str, database_name: str, admin_headers: dict[str, str]
) -> None:
    settings = make_settings(mongodb_uri, database_name, env="prod")
    async with app_factory(settings) as app, http_client(app, headers=admin_headers) as client:
        ide = await client.get("/graphql", headers={"accept": "text/html"})
        introspection = await client.post(
            "/graphql", json={"query": "{ __schema { queryType { name } } }"}
        )
        plain = await client.post("/graphql", json={"query": "{ version }"})
    assert ide.status_code != 200
    assert "introspection" in introspection.json()["errors"][0]["message"].lower()
    assert plain.json() == {"data": {"version": __version__}}


async def test_graphql_refuses_queries_over_get(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": "{ version }"})
    assert response.status_code == 400
    assert "not allowed" in response.text


async def test_each_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"x-request-id": "trace-42"})
    made = await client.get("/healthz")
    hostile = await client.get("/healthz", headers={"x-request-id": "a b\n"})
    assert given.headers["x-request-id"] == "trace-42"
    assert len(made.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] != "a b\n"


async def test_unknown_routes_get_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "message": "Not Found"}


async def test_openapi_docs_are_served(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    spec = (await client.get("/openapi.json")).json()
    assert docs.status_code == 200
    assert "/readyz" in spec["paths"]


async def test_live_server_serves_real_http(live_server: object) -> None:
    url = live_server.url  # type: ignore[attr-defined]
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/readyz")
    assert response.status_code == 200
