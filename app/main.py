"""The FastAPI app: `create_app(settings)` and its lifespan."""

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.errors import PyMongoError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__, scheduler, webhook_worker, worker
from app.admin import router as admin_router
from app.deps import State
from app.errors import install_error_handlers
from app.graphql.schema import build_router
from app.ingest.routes import router as ingest_router
from app.logs import request_id_var
from app.metrics import Metrics, route_template
from app.mongo import create_client, ensure_indexes, index_registry
from app.reads import router as reads_router
from app.settings import Settings
from app.state import KindredState
from profiles.scores.service import ScoreService
from profiles.scores.store import ScoreStore
from profiles.service import utcnow

log = logging.getLogger(__name__)

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class ObservabilityMiddleware:
    """Gives each request an id (the caller's `X-Request-ID` if sane), logs it, and meters it.

    One middleware, so the timing, the status and the id come from one place.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route, method = route_template(scope), scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.request_seconds.labels(route, method).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": method,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)


async def _prepare(state: KindredState, stop: asyncio.Event) -> None:
    # The app serves /healthz and a 503 /readyz while the database is not there
    # yet, as an orchestrator expects; this loop makes it ready once it is, then
    # runs the profile builder in this process unless told not to.
    delay = 0.1
    while True:
        try:
            await state.db.command("ping")
            await ensure_indexes(state.db, index_registry())
        except PyMongoError as exc:
            log.warning("database not ready; retrying", extra={"error": str(exc), "in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        else:
            state.ready.set()
            log.info("ready", extra={"database": state.db.name})
            break
    settings = state.settings
    if settings.worker_in_process:
        builder = worker.build(state.client, settings, state.profiles, webhooks=state.webhooks)
        await asyncio.gather(
            worker.run(builder, stop, poll_seconds=settings.worker_poll_seconds),
            scheduler.run(
                state.segments,
                stop,
                period_seconds=settings.segments_scheduler_seconds,
                clock=utcnow,
                scores=ScoreService(ScoreStore(state.db)),
                rfm_every=timedelta(hours=settings.rfm_every_hours)
                if settings.rfm_every_hours
                else None,
            ),
        )


def create_app(settings: Settings) -> FastAPI:
    """Returns the Kindred HTTP app for `settings`, which must name a MongoDB URI."""
    if settings.mongodb_uri is None:
        raise ValueError(
            "create_app needs settings.mongodb_uri; `kindred serve` starts the embedded "
            "database and fills it in."
        )
    uri = settings.mongodb_uri
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = create_client(uri, listeners=[metrics.db_listener])
        state = KindredState.build(settings, client, metrics)
        app.state.kindred = state
        stop = asyncio.Event()
        background = asyncio.create_task(_prepare(state, stop), name="kindred-background")
        webhooks = asyncio.create_task(
            webhook_worker.run_when_ready(
                state.webhooks,
                state.ready,
                stop,
                poll_seconds=settings.webhook_poll_seconds,
                batch_size=settings.webhook_batch_size,
            )
            if settings.webhooks_in_process
            else stop.wait(),
            name="kindred-webhooks",
        )
        try:
            yield
        finally:
            # Let the builder finish its batch (graceful), but do not hang shutdown.
            stop.set()
            for task in (background, webhooks):
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout=10)
                except TimeoutError:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await state.webhooks.aclose()
            await client.close()
            log.info("stopped")

    app = FastAPI(
        title="Kindred",
        version=__version__,
        summary="An open-source customer data platform on MongoDB.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    @app.get("/healthz", tags=["operations"], summary="The process is alive.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="The database answers and indexes exist; 503 until then.",
        responses={503: {"description": "Not ready yet, or the database is unreachable."}},
    )
    async def readyz(state: State) -> JSONResponse:
        if not state.ready.is_set():
            return JSONResponse({"status": "starting"}, status_code=503)
        try:
            await asyncio.wait_for(state.db.command("ping"), timeout=2)
        except (PyMongoError, TimeoutError):
            return JSONResponse({"status": "database unreachable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics.")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(reads_router)
    app.include_router(admin_router)
    app.include_router(ingest_router)
    app.include_router(build_router(settings), prefix="/graphql", include_in_schema=False)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)
    return app
