"""One place that renders every error as `{"code", "message"}`."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from profiles.errors import KindredError

log = logging.getLogger(__name__)


def error_body(code: str, message: str) -> dict[str, str]:
    """Returns the error shape every Kindred endpoint and the Segment SDKs read."""
    return {"code": code, "message": message}


def _field_path(loc: tuple[int | str, ...]) -> str:
    # Drop FastAPI's "body"/"query" prefix: users name fields, not transport parts.
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in {"body", "query", "path"} else loc
    return ".".join(str(p) for p in parts) or "request"


def install_error_handlers(app: FastAPI) -> None:
    """Renders Kindred errors, validation errors and HTTP errors in one shape."""

    @app.exception_handler(KindredError)
    async def kindred_error(_: Request, exc: KindredError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        message = f"{_field_path(tuple(first['loc']))}: {first['msg']}"
        return JSONResponse(error_body("invalid_request", message), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal", "Internal server error."), status_code=500)
