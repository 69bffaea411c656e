"""The Segment-compatible tracking API: `POST /v1/identify`, `/v1/track`, ... and `/v1/batch`."""

import asyncio
import functools
import json
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.deps import State
from app.errors import error_body
from app.ingest.errors import (
    InvalidBatch,
    InvalidEncoding,
    InvalidEvent,
    InvalidJson,
    RequestTooLarge,
    TooManyEvents,
)
from app.ingest.models import (
    BatchDefaults,
    EventType,
    IngestResponse,
    RejectedEvent,
    Rejection,
    ValidatedBatch,
    validate_batch,
)
from app.ingest.sources import basic_username
from app.ingest.store import now_ms
from app.state import KindredState

router = APIRouter(prefix="/v1", tags=["ingest"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "Bad JSON, an oversize request, or (strict mode / one event) an "
        'invalid event: `{"code", "message"}`.'
    },
    401: {"description": "Missing, unknown or revoked write key."},
}
_BODY_DOC = (
    "Authenticate with the source's write key as the HTTP Basic username (empty "
    "password) or as `writeKey` in the body. `Content-Encoding: gzip` is accepted. "
    "Send `X-Strict-Mode: 1` to refuse the whole request if any event is invalid. "
    "See docs/api.md for the fields."
)
# Room for gzip's framing when the body compresses badly.
_GZIP_SLACK = 1024


def _gunzip(data: bytes, *, limit: int) -> bytes:
    """Returns the decompressed body, never holding more than `limit` + 1 bytes of output."""
    out = bytearray()
    while data:
        stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += stream.decompress(data, limit + 1 - len(out))
        except zlib.error:
            raise InvalidEncoding("The body is not valid gzip.") from None
        if len(out) > limit or stream.unconsumed_tail:
            raise RequestTooLarge(f"The decompressed body is over the limit of {limit} bytes.")
        if not stream.eof:
            raise InvalidEncoding("The gzip body is truncated.")
        data = stream.unused_data
    return bytes(out)


async def _read_body(request: Request, *, limit: int) -> bytes:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in {"", "identity", "gzip"}:
        raise InvalidEncoding(
            f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding."
        )
    wire_limit = limit + _GZIP_SLACK if encoding == "gzip" else limit
    too_large = RequestTooLarge(f"The request body is over the limit of {limit} bytes.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > wire_limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > wire_limit:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding == "gzip":
        body = _gunzip(body, limit=limit)
    if len(body) > limit:
        raise too_large
    return body


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parse_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidJson("The body is nested too deeply.") from None
    except ValueError as exc:
        raise InvalidJson(f"The body is not valid JSON: {exc}.") from None
    if not isinstance(parsed, dict):
        raise InvalidJson("The body must be a JSON object.")
    return parsed


def _strict(request: Request) -> bool:
    return request.headers.get("x-strict-mode", "").strip().lower() in {"1", "true"}


def _rejected(rejections: list[Rejection]) -> list[RejectedEvent]:
    return [
        RejectedEvent(message_id=r.message_id, index=r.index, reason=r.reason) for r in rejections
    ]


def _object_or_none(envelope: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = envelope.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidBatch(f"{key}: must be an object")
    return value


async def _receive(request: Request, state: KindredState, kind: EventType | None) -> JSONResponse:
    received_at = now_ms()
    limits = state.ingest.limits
    header_key = basic_username(request.headers.get("authorization"))
    # A key in the header is checked before the body is read.
    source = None if header_key is None else await state.sources.authenticate(header_key)
    body = await _read_body(
        request, limit=limits.max_event_bytes if kind else limits.max_batch_bytes
    )
    envelope = _parse_object(body)
    if source is None:
        source = await state.sources.authenticate(envelope.get("writeKey"))
    if kind is None:
        items = envelope.get("batch")
        if not isinstance(items, list):
            raise InvalidBatch("batch: must be a list of events")
        if len(items) > limits.max_batch_events:
            raise TooManyEvents(
                f"batch: {len(items)} events is over the limit of {limits.max_batch_events}"
            )
        defaults = BatchDefaults(
            sent_at=envelope.get("sentAt"),
            context=_object_or_none(envelope, "context"),
            integrations=_object_or_none(envelope, "integrations"),
        )
    else:
        items, defaults = [envelope], BatchDefaults()
    # Up to 2,500 events: validated off the event loop.
    batch: ValidatedBatch = await asyncio.to_thread(
        functools.partial(
            validate_batch,
            items,
            source=source.name,
            received_at=received_at,
            limits=limits,
            forced_type=kind,
            defaults=defaults,
        )
    )
    counter = state.metrics.ingest_events
    strict = _strict(request)
    if batch.rejections:
        counter.labels(source.name, "rejected").inc(len(batch.rejections))
    if strict and batch.rejections:
        if kind is not None:
            raise InvalidEvent(f"{batch.rejections[0].reason}; nothing was stored")
        reasons = "; ".join(f"#{r.index}: {r.reason}" for r in batch.rejections[:5])
        more = len(batch.rejections) - 5
        message = (
            f"{len(batch.rejections)} of {len(items)} events are invalid, so nothing was "
            f"stored (strict mode): {reasons}" + (f"; and {more} more" if more > 0 else "")
        )
        rejected = [r.model_dump(by_alias=True) for r in _rejected(batch.rejections)]
        return JSONResponse(
            {**error_body(InvalidBatch.code, message), "rejected": rejected}, status_code=400
        )
    if kind is not None and batch.rejections:
        [quarantine_id] = await state.ingest.quarantine(
            batch, source=source.name, received_at=received_at
        )
        raise InvalidEvent(
            f"{batch.rejections[0].reason}; the event was quarantined as {quarantine_id}"
        )
    accepted = await state.ingest.accept(batch, source=source.name, received_at=received_at)
    counter.labels(source.name, "accepted").inc(accepted.stored)
    counter.labels(source.name, "duplicate").inc(accepted.duplicates)
    response = IngestResponse(accepted=accepted.accepted, rejected=_rejected(accepted.rejected))
    return JSONResponse(response.model_dump(by_alias=True))


def _endpoint(kind: EventType | None) -> Callable[[Request, State], Awaitable[JSONResponse]]:
    async def receive(request: Request, state: State) -> JSONResponse:
        return await _receive(request, state, kind)

    return receive


for _kind in EventType:
    router.add_api_route(
        f"/{_kind.value}",
        _endpoint(_kind),
        methods=["POST"],
        summary=f"Receives one {_kind.value} event (Segment-compatible).",
        description=_BODY_DOC,
        response_model=IngestResponse,
        responses=_ERRORS,
        name=f"ingest_{_kind.value}",
    )
router.add_api_route(
    "/batch",
    _endpoint(None),
    methods=["POST"],
    summary="Receives up to 2,500 events of any type in one request (what SDKs send).",
    description=_BODY_DOC,
    response_model=IngestResponse,
    responses=_ERRORS,
    name="ingest_batch",
)
