"""Ingest payloads and their validation, with no I/O.

`validate_batch` turns the JSON items of a request into event documents (the
contract the profile builder reads) and rejections (what goes to quarantine).
User-supplied keys never reach MongoDB as operators or dotted paths: any key that
starts with `$`, contains `.` or a NUL, anywhere in an event, rejects the event.
"""

import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    ValidationError,
)

from app.ingest.errors import InvalidSourceName
from app.mongo import Document
from profiles.errors import KindredError
from profiles.ids import new_id
from profiles.traits import check_key, check_value, parse_datetime, to_utc_ms

SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
MAX_MESSAGE_ID = 100
MAX_DEPTH = 16
GENERATED_MESSAGE_ID_PREFIX = "kdm_"
_INT64 = (-(2**63), 2**63 - 1)


class EventType(StrEnum):
    """The Segment event types Kindred accepts."""

    IDENTIFY = "identify"
    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    GROUP = "group"
    ALIAS = "alias"


class EventStatus(StrEnum):
    """Where an event is in the profile builder's hands; ingest writes `pending`."""

    PENDING = "pending"
    LEASED = "leased"  # a worker holds it until `lease_until`
    APPLIED = "applied"


@dataclass(frozen=True)
class Limits:
    """Request and event size limits (from `Settings`)."""

    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    max_batch_events: int = 2_500


@dataclass(frozen=True)
class Source:
    """A connector that sends events with a write key; the key itself is never stored."""

    name: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class BatchDefaults:
    """What a `/v1/batch` envelope gives every item that lacks its own."""

    sent_at: object = None
    context: Mapping[str, Any] | None = None
    integrations: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Rejection:
    """An event that failed validation: where it was, why, and the event as a JSON string."""

    index: int
    message_id: str | None
    reason: str
    raw: str


@dataclass(frozen=True)
class ValidatedBatch:
    """A request's items split into event documents to store and rejections to quarantine."""

    events: list[Document] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class QuarantinedEvent:
    """A rejected event kept for review and replay."""

    id: str
    source: str
    received_at: datetime
    reason: str
    raw: str
    message_id: str | None = None
    replayed_at: datetime | None = None


class RejectedEvent(BaseModel):
    """One rejected event in an ingest response."""

    model_config = ConfigDict(populate_by_name=True)

    message_id: str | None = Field(alias="messageId")
    index: int
    reason: str


class IngestResponse(BaseModel):
    """The 200 answer of every ingest endpoint."""

    success: bool = True
    accepted: int
    rejected: list[RejectedEvent] = Field(default_factory=list)


class EventRejected(Exception):
    """Raised inside validation with the reason an event is refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_source_name(name: str) -> str:
    """Returns the name if it matches `^[a-z][a-z0-9_-]{0,63}$`; raises `InvalidSourceName`."""
    if not SOURCE_NAME.match(name):
        raise InvalidSourceName(
            f"source name {name!r} is invalid: use 1 to 64 lowercase letters, digits, '_' "
            "or '-', starting with a letter"
        )
    return name


def generated_message_id() -> str:
    """Returns a message id for an event that came without one."""
    return f"{GENERATED_MESSAGE_ID_PREFIX}{uuid.uuid4().hex}"


# --- the payload model ------------------------------------------------------


def _identifier(value: object) -> object:
    # Segment accepts numbers for ids; Kindred stores every id as a string.
    if isinstance(value, bool):
        raise ValueError("must be a string or a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return str(int(value)) if value.is_integer() else repr(value)
    if value == "":
        return None
    return value


def _instant(value: object) -> object:
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string")
    try:
        return to_utc_ms(parse_datetime(value))
    except (ValueError, OverflowError):
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 date-time") from None


def _blank_is_absent(value: object) -> object:
    return None if value == "" else value


Identifier = Annotated[StrictStr | None, BeforeValidator(_identifier)]
Instant = Annotated[datetime | None, BeforeValidator(_instant)]
MessageId = Annotated[
    Annotated[StrictStr, StringConstraints(max_length=MAX_MESSAGE_ID)] | None,
    BeforeValidator(_blank_is_absent),
]
JsonObject = dict[str, Any] | None


class EventPayload(BaseModel):
    """The fields of a Segment event that Kindred keeps; others are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: EventType
    message_id: MessageId = Field(default=None, alias="messageId")
    user_id: Identifier = Field(default=None, alias="userId")
    anonymous_id: Identifier = Field(default=None, alias="anonymousId")
    previous_id: Identifier = Field(default=None, alias="previousId")
    group_id: Identifier = Field(default=None, alias="groupId")
    event: StrictStr | None = None
    name: StrictStr | None = None
    traits: JsonObject = None
    properties: JsonObject = None
    context: JsonObject = None
    integrations: JsonObject = None
    timestamp: Instant = None
    sent_at: Instant = Field(default=None, alias="sentAt")


def _first_error(exc: ValidationError) -> str:
    # One reason per event, naming the field as the sender spelled it.
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "event"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


# --- key and value safety -----------------------------------------------------


def _where(path: str) -> str:
    return path or "the top level"


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise EventRejected(f"{_where(path)}: holds text that is not valid Unicode") from None


def _check_tree(value: object, path: str, depth: int) -> None:
    """Raises `EventRejected` naming the path of the first unsafe key or value under `value`."""
    if isinstance(value, dict):
        if depth > MAX_DEPTH:
            raise EventRejected(f"{path}: nested deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            _check_key_text(key, path)
            _check_tree(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        if depth > MAX_DEPTH:
            raise EventRejected(f"{path}: nested deeper than {MAX_DEPTH} levels")
        for index, item in enumerate(value):
            _check_tree(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not _INT64[0] <= value <= _INT64[1]:
            raise EventRejected(f"{path}: integer {value} is outside the 64-bit range")
    elif isinstance(value, float) and not math.isfinite(value):
        raise EventRejected(f"{path}: holds a non-finite number")


def _check_key_text(key: str, path: str) -> None:
    problem = None
    if key.startswith("$"):
        problem = "starts with '$'"
    elif "." in key:
        problem = "contains '.'"
    elif "\0" in key:
        problem = "contains a NUL character"
    if problem is not None:
        raise EventRejected(
            f"{_where(path)}: key {key!r} {problem}; keys must not start with '$' or "
            "contain '.' or NUL"
        )
    _check_text(key, path)


def _check_traits(traits: Mapping[str, Any], path: str) -> None:
    for key, value in traits.items():
        try:
            check_key(key)
            check_value(key, value)
        except KindredError as exc:
            raise EventRejected(f"{path}.{key}: {exc.message}") from None


# --- one event ----------------------------------------------------------------


def _with_defaults(
    item: Mapping[str, Any], *, forced_type: EventType | None, defaults: BatchDefaults
) -> dict[str, Any]:
    # The stored raw event carries what the request gave it, so replaying it
    # later needs nothing but the row; the write key is never kept.
    event = {k: v for k, v in item.items() if k != "writeKey"}
    if forced_type is not None:
        event["type"] = forced_type.value
    if event.get("messageId") in (None, ""):
        event["messageId"] = generated_message_id()
    if defaults.sent_at is not None and "sentAt" not in event:
        event["sentAt"] = defaults.sent_at
    for key, shared in (("context", defaults.context), ("integrations", defaults.integrations)):
        own = event.get(key)
        if shared and (own is None or isinstance(own, dict)):
            event[key] = {**shared, **(own or {})}
    return event


def _document(payload: EventPayload, *, source: str, received_at: datetime) -> Document:
    if payload.user_id is None and payload.anonymous_id is None:
        raise EventRejected("userId or anonymousId: one of them is required")
    match payload.type:
        case EventType.TRACK if not payload.event:
            raise EventRejected("event: required for track events")
        case EventType.ALIAS if payload.previous_id is None:
            raise EventRejected("previousId: required for alias events")
        case EventType.ALIAS if payload.user_id is None:
            raise EventRejected("userId: required for alias events")
        case EventType.GROUP if payload.group_id is None:
            raise EventRejected("groupId: required for group events")
    context = payload.context or {}
    traits = payload.traits or {}
    if payload.type is EventType.IDENTIFY:
        context_traits = context.get("traits")
        if context_traits is not None and not isinstance(context_traits, dict):
            raise EventRejected("context.traits: must be an object")
        _check_traits(context_traits or {}, "context.traits")
        traits = {**(context_traits or {}), **traits}
    _check_traits(payload.traits or {}, "traits")
    original = payload.timestamp
    sent_at = payload.sent_at
    if original is None:
        timestamp = received_at
    elif sent_at is None:
        timestamp = original
    else:
        # Segment's clock-skew correction: trust the device's clock only for the
        # interval between the event and sending it.
        try:
            timestamp = received_at - (sent_at - original)
        except OverflowError:
            raise EventRejected("timestamp: out of range once corrected for clock skew") from None
    return {
        "_id": new_id("evt"),
        "source": source,
        "message_id": payload.message_id,
        "type": payload.type.value,
        "event": payload.event if payload.type is EventType.TRACK else None,
        "name": payload.name if payload.type in (EventType.PAGE, EventType.SCREEN) else None,
        "user_id": payload.user_id,
        "anonymous_id": payload.anonymous_id,
        "previous_id": payload.previous_id,
        "group_id": payload.group_id,
        "traits": traits,
        "properties": payload.properties or {},
        "context": context,
        "integrations": payload.integrations or {},
        "timestamp": to_utc_ms(timestamp),
        "original_timestamp": original,
        "sent_at": sent_at,
        "received_at": received_at,
        "status": EventStatus.PENDING.value,
        "profile_id": None,
    }


def raw_json(item: object) -> str:
    """Returns the event as compact ASCII JSON, the form quarantine keeps it in."""
    return json.dumps(item, separators=(",", ":"))


def validate_event(
    item: object,
    *,
    source: str,
    received_at: datetime,
    limits: Limits,
    index: int = 0,
    forced_type: EventType | None = None,
    defaults: BatchDefaults = BatchDefaults(),
) -> Document | Rejection:
    """Returns the event document for one received item, or the reason it is refused."""
    if not isinstance(item, dict):
        return Rejection(index, None, "event: must be a JSON object", raw_json(item))
    size = len(
        json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")
    )
    event = _with_defaults(item, forced_type=forced_type, defaults=defaults)
    raw = raw_json(event)
    message_id = event.get("messageId")
    reported_id = message_id if isinstance(message_id, str) else None
    try:
        if size > limits.max_event_bytes:
            raise EventRejected(
                f"event: {size} bytes is over the limit of {limits.max_event_bytes} bytes"
            )
        _check_tree(event, "", 0)
        try:
            payload = EventPayload.model_validate(event)
        except ValidationError as exc:
            raise EventRejected(_first_error(exc)) from None
        return _document(payload, source=source, received_at=to_utc_ms(received_at))
    except EventRejected as exc:
        return Rejection(index, reported_id, exc.reason, raw)


def validate_batch(
    items: Sequence[object],
    *,
    source: str,
    received_at: datetime,
    limits: Limits,
    forced_type: EventType | None = None,
    defaults: BatchDefaults = BatchDefaults(),
) -> ValidatedBatch:
    """Returns the items split into event documents and rejections, in their order."""
    batch = ValidatedBatch()
    for index, item in enumerate(items):
        outcome = validate_event(
            item,
            source=source,
            received_at=received_at,
            limits=limits,
            index=index,
            forced_type=forced_type,
            defaults=defaults,
        )
        if isinstance(outcome, Rejection):
            batch.rejections.append(outcome)
        else:
            batch.events.append(outcome)
    return batch
