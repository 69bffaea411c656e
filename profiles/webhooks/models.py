"""Webhooks' plain data: subscriptions, outbox rows, what a receiver gets, and input rules."""

import hashlib
import ipaddress
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from profiles.ids import new_id
from profiles.segments.models import Change, Transition
from profiles.webhooks.errors import InvalidWebhook

MAX_URL_LENGTH = 2048
MAX_SEGMENT_ID_LENGTH = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class DeliveryStatus(StrEnum):
    """Where an outbox row stands."""

    # Waiting for its next attempt; while a worker sends it, it stays pending under a lease.
    PENDING = "pending"
    DELIVERED = "delivered"
    # Given up on (too many failures, or its subscription is paused); an admin can redeliver.
    DEAD = "dead"
    # Its subscription was deleted: there is no one to send it to.
    CANCELLED = "cancelled"


class EventType(StrEnum):
    """The `type` of a webhook's body."""

    ENTERED = "segment.entered"
    EXITED = "segment.exited"

    @classmethod
    def of(cls, change: Change) -> "EventType":
        """Returns the event type announcing a membership change."""
        return cls.ENTERED if change is Change.ENTERED else cls.EXITED


@dataclass(frozen=True)
class Subscription:
    """A receiver's URL for one segment's changes; its signing secret is never part of it."""

    id: str
    segment_id: str
    url: str
    changes: frozenset[Change]
    active: bool
    created_at: datetime
    paused_at: datetime | None = None
    paused_reason: str | None = None

    def wants(self, transition: Transition) -> bool:
        """Tells whether this subscription is told about a transition."""
        return (
            self.active
            and transition.segment_id == self.segment_id
            and transition.change in self.changes
        )


@dataclass(frozen=True)
class Delivery:
    """One outbox row: one transition for one subscription, and how sending it went."""

    id: str
    subscription_id: str
    segment_id: str
    segment_version: int
    profile_id: str
    change: Change
    at: datetime
    cause: Mapping[str, Any]
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_status: int | None = None  # the receiver's HTTP status, if it answered
    last_error: str | None = None
    delivered_at: datetime | None = None

    @property
    def type(self) -> EventType:
        """Returns the event type the receiver sees."""
        return EventType.of(self.change)


@dataclass(frozen=True)
class DeliveryReport:
    """What one `deliver_due` pass did."""

    leased: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    cancelled: int = 0
    paused: tuple[str, ...] = field(default=())  # subscriptions paused by a 410


def check_url(url: str) -> str:
    """Returns the URL if it is an http(s) URL Kindred may post to; raises `InvalidWebhook`.

    Refused: other schemes, no host or a malformed one, a bad port, user info
    (credentials do not belong in a URL that admins can read back), a fragment
    (never sent), whitespace or control characters, more than 2,048 characters.
    """

    def refuse(message: str) -> InvalidWebhook:
        return InvalidWebhook("url", message)

    if not url:
        raise refuse("a URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise refuse(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in url):
        raise refuse("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(f"the URL is malformed: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise refuse("the URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise refuse("the URL must not contain credentials (user:password@)")
    if parts.fragment or url.endswith("#"):
        raise refuse("the URL must not have a #fragment; it is never sent")
    if port == 0:
        raise refuse("the URL's port must be between 1 and 65535")
    if not _valid_host(parts.hostname or "", bracketed=parts.netloc.startswith("[")):
        raise refuse("the URL has no valid host name")
    return url


def _valid_host(host: str, *, bracketed: bool) -> bool:
    if bracketed:
        try:
            return ipaddress.ip_address(host).version == 6
        except ValueError:
            return False
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.rstrip(".").split(".")
    return 0 < len(ascii_host) <= 253 and all(_LABEL.match(label) for label in labels)


def check_segment_id(segment_id: str) -> str:
    """Returns the segment id if it is usable; raises `InvalidWebhook` naming `segmentId`."""
    if not segment_id or len(segment_id) > MAX_SEGMENT_ID_LENGTH:
        raise InvalidWebhook(
            "segmentId", f"a segment id has 1 to {MAX_SEGMENT_ID_LENGTH} characters"
        )
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in segment_id):
        raise InvalidWebhook("segmentId", "a segment id has no whitespace or control characters")
    return segment_id


def check_changes(changes: Iterable[Change]) -> frozenset[Change]:
    """Returns the changes as a set; raises `InvalidWebhook` if there are none."""
    found = frozenset(Change(c) for c in changes)
    if not found:
        raise InvalidWebhook("changes", "name at least one change: entered, exited or both")
    return found


def new_subscription_id() -> str:
    """Returns a new subscription id such as `whk_01JD…`."""
    return new_id("whk")


def to_millis(at: datetime) -> datetime:
    """Returns the instant in UTC truncated to milliseconds, MongoDB's precision."""
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return _EPOCH + timedelta(milliseconds=(aware - _EPOCH) // timedelta(milliseconds=1))


def delivery_id(subscription_id: str, transition: Transition) -> str:
    """Returns the outbox id of a transition for a subscription: the same on every retry.

    It sorts by the transition's time (ULID layout), so deliveries page newest first.
    """
    at = to_millis(transition.at)
    fact = json.dumps(
        [
            subscription_id,
            transition.segment_id,
            transition.segment_version,
            transition.profile_id,
            transition.change.value,
            at.isoformat(),
        ]
    )
    digest = int.from_bytes(hashlib.sha256(fact.encode()).digest()[:10], "big")
    return new_id("whd", now_ms=(at - _EPOCH) // timedelta(milliseconds=1), random=digest)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_millis(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def payload(delivery: Delivery) -> dict[str, Any]:
    """Returns the JSON document a receiver gets for a delivery."""
    return {
        "id": delivery.id,
        "type": delivery.type.value,
        "segment": {"id": delivery.segment_id, "version": delivery.segment_version},
        "profile_id": delivery.profile_id,
        "at": _json_value(delivery.at),
        "cause": _json_value(delivery.cause),
    }


def body(delivery: Delivery) -> bytes:
    """Returns the exact bytes posted (and signed) for a delivery."""
    return json.dumps(payload(delivery), separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Attempted:
    """How handling one leased row went, for the store to record."""

    delivery_id: str
    status: DeliveryStatus
    at: datetime
    sent: bool  # a request went out (counts as an attempt)
    next_attempt_at: datetime | None = None  # when pending again
    last_status: int | None = None
    last_error: str | None = None
    expire_at: datetime | None = None  # when a finished row may be removed
