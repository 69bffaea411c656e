"""The ingest API's expected failures, each rendered as `{"code", "message"}`."""

from collections.abc import Mapping
from http import HTTPStatus
from typing import ClassVar

from profiles.errors import KindredError


class InvalidWriteKey(KindredError):
    """The request carries no write key, a malformed one, or one that is unknown or revoked."""

    code = "unauthorized"
    status = HTTPStatus.UNAUTHORIZED
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": 'Basic realm="kindred"'}


class InvalidJson(KindredError):
    """The request body is not JSON, or not the JSON object the endpoint expects."""

    code = "invalid_json"
    status = HTTPStatus.BAD_REQUEST


class RequestTooLarge(KindredError):
    """The request body, once decompressed, is over the size limit."""

    code = "request_too_large"
    status = HTTPStatus.BAD_REQUEST


class TooManyEvents(KindredError):
    """A batch holds more events than one request may."""

    code = "too_many_events"
    status = HTTPStatus.BAD_REQUEST


class InvalidEncoding(KindredError):
    """The body's `Content-Encoding` is unsupported, or the gzip stream is corrupt."""

    code = "invalid_encoding"
    status = HTTPStatus.BAD_REQUEST


class InvalidBatch(KindredError):
    """The batch envelope (`batch`, `sentAt`, `context`, `integrations`) is malformed."""

    code = "invalid_batch"
    status = HTTPStatus.BAD_REQUEST


class InvalidEvent(KindredError):
    """A single-event request failed validation; the message names the field."""

    code = "invalid_event"
    status = HTTPStatus.BAD_REQUEST


class InvalidSourceName(KindredError):
    """A source name breaks the naming rule."""

    code = "invalid_source_name"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class SourceExists(KindredError):
    """A source with that name exists already (perhaps revoked)."""

    code = "source_exists"
    status = HTTPStatus.CONFLICT
