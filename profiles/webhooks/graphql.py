"""GraphQL types and resolvers for webhooks; the app adds them to its schema (admin only)."""

from datetime import datetime
from enum import Enum
from typing import Annotated, Protocol

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from profiles.graphql import (
    InvalidInput,
    InvalidPageSize,
    PageInfo,
    as_json,
    decode_cursor,
    encode_cursor,
)
from profiles.segments.models import Change
from profiles.webhooks import errors
from profiles.webhooks.models import Delivery, DeliveryStatus, Subscription
from profiles.webhooks.service import WebhookService

MAX_PAGE = 500


class WebhookState(Protocol):
    """What webhook resolvers need of the app's state."""

    @property
    def webhooks(self) -> WebhookService: ...


class WebhookContext(Protocol):
    """What webhook resolvers need of the per-request context."""

    @property
    def state(self) -> WebhookState: ...


@strawberry.enum(name="WebhookChange", description="A membership change a webhook is told of.")
class WebhookChange(Enum):
    ENTERED = "entered"
    EXITED = "exited"


@strawberry.enum(name="WebhookDeliveryStatus", description="Where a webhook delivery stands.")
class WebhookDeliveryStatus(Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    CANCELLED = "cancelled"


@strawberry.type(name="Webhook", description="A URL told when profiles enter or leave a segment.")
class WebhookType:
    id: strawberry.ID
    segment_id: str
    url: str
    changes: list[WebhookChange]
    active: bool = strawberry.field(description="False once paused (the receiver answered 410).")
    paused_at: datetime | None
    paused_reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, subscription: Subscription) -> "WebhookType":
        return cls(
            id=strawberry.ID(subscription.id),
            segment_id=subscription.segment_id,
            url=subscription.url,
            changes=sorted(
                (WebhookChange(c.value) for c in subscription.changes), key=lambda c: c.value
            ),
            active=subscription.active,
            paused_at=subscription.paused_at,
            paused_reason=subscription.paused_reason,
            created_at=subscription.created_at,
        )


@strawberry.type(description="A new webhook and its signing secret, which is shown only now.")
class WebhookCreated:
    webhook: WebhookType
    secret: str = strawberry.field(
        description="Verifies `Kindred-Signature`; store it now, it is never shown again."
    )


CreateWebhookResult = Annotated[
    WebhookCreated | InvalidInput, strawberry.union("CreateWebhookResult")
]


@strawberry.type(description="No webhook has that id.")
class WebhookNotFound:
    message: str


ResumeWebhookResult = Annotated[
    WebhookType | WebhookNotFound, strawberry.union("ResumeWebhookResult")
]


@strawberry.type(name="WebhookDelivery", description="One change sent, or to send, to a webhook.")
class WebhookDeliveryType:
    id: strawberry.ID = strawberry.field(description="Also the `Kindred-Webhook-Id` header.")
    webhook_id: strawberry.ID
    type: str = strawberry.field(description="`segment.entered` or `segment.exited`.")
    segment_id: str
    segment_version: int
    profile_id: strawberry.ID
    at: datetime
    cause: JSON
    status: WebhookDeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None = strawberry.field(description="The receiver's last HTTP status.")
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, delivery: Delivery) -> "WebhookDeliveryType":
        return cls(
            id=strawberry.ID(delivery.id),
            webhook_id=strawberry.ID(delivery.subscription_id),
            type=delivery.type.value,
            segment_id=delivery.segment_id,
            segment_version=delivery.segment_version,
            profile_id=strawberry.ID(delivery.profile_id),
            at=delivery.at,
            cause=as_json(delivery.cause),
            status=WebhookDeliveryStatus(delivery.status.value),
            attempts=delivery.attempts,
            # A pending row's next attempt; while one is in flight, when its lease ends.
            next_attempt_at=delivery.next_attempt_at,
            last_attempt_at=delivery.last_attempt_at,
            last_status=delivery.last_status,
            last_error=delivery.last_error,
            delivered_at=delivery.delivered_at,
            created_at=delivery.created_at,
        )


@strawberry.type
class WebhookDeliveryEdge:
    cursor: str
    node: WebhookDeliveryType


@strawberry.type
class WebhookDeliveryConnection:
    edges: list[WebhookDeliveryEdge]
    page_info: PageInfo


@strawberry.type(description="No webhook delivery has that id.")
class WebhookDeliveryNotFound:
    message: str


@strawberry.type(
    description="The delivery cannot be sent again: it is not dead, or its webhook is paused "
    "or deleted."
)
class RedeliveryRefused:
    message: str


RedeliverWebhookResult = Annotated[
    WebhookDeliveryType | WebhookDeliveryNotFound | RedeliveryRefused,
    strawberry.union("RedeliverWebhookResult"),
]


# Resolvers: the app mounts each with `strawberry.field(resolver=…)` or
# `strawberry.mutation(resolver=…)` and its admin permission.


async def create_webhook(
    info: Info[WebhookContext, None],
    segment_id: str,
    url: str,
    changes: list[WebhookChange] | None = None,
) -> CreateWebhookResult:
    """Subscribes a URL to a segment's changes (both when `changes` is absent)."""
    wanted = (
        [Change.ENTERED, Change.EXITED] if changes is None else [Change(c.value) for c in changes]
    )
    try:
        subscription, secret = await info.context.state.webhooks.subscribe(
            segment_id, url, changes=wanted
        )
    except errors.InvalidWebhook as exc:
        return InvalidInput(field=exc.field, message=exc.message)
    return WebhookCreated(webhook=WebhookType.of(subscription), secret=secret)


async def delete_webhook(info: Info[WebhookContext, None], id: strawberry.ID) -> bool:
    """Deletes a webhook and cancels its pending deliveries; false if there was none."""
    return await info.context.state.webhooks.unsubscribe(str(id))


async def resume_webhook(
    info: Info[WebhookContext, None], id: strawberry.ID
) -> ResumeWebhookResult:
    """Makes a paused webhook active again (its dead deliveries can then be redelivered)."""
    try:
        subscription = await info.context.state.webhooks.resume(str(id))
    except errors.WebhookNotFound as exc:
        return WebhookNotFound(message=exc.message)
    return WebhookType.of(subscription)


async def redeliver_webhook(
    info: Info[WebhookContext, None], outbox_id: strawberry.ID
) -> RedeliverWebhookResult:
    """Sends a dead delivery again, with a fresh count of attempts."""
    try:
        delivery = await info.context.state.webhooks.redeliver(str(outbox_id))
    except errors.DeliveryNotFound as exc:
        return WebhookDeliveryNotFound(message=exc.message)
    except errors.RedeliveryRefused as exc:
        return RedeliveryRefused(message=exc.message)
    return WebhookDeliveryType.of(delivery)


async def webhooks(
    info: Info[WebhookContext, None], segment_id: str | None = None
) -> list[WebhookType]:
    """Returns the webhooks of a segment, or all, oldest first (never their secrets)."""
    found = await info.context.state.webhooks.subscriptions(segment_id)
    return [WebhookType.of(s) for s in found]


async def webhook_deliveries(
    info: Info[WebhookContext, None],
    status: WebhookDeliveryStatus | None = None,
    first: int = 50,
    after: str | None = None,
) -> WebhookDeliveryConnection:
    """Returns deliveries newest first (by the change's time), of one status or all."""
    if not 1 <= first <= MAX_PAGE:
        raise InvalidPageSize(f"first must be between 1 and {MAX_PAGE}")
    after_id = decode_cursor(after, parts=1)[0] if after is not None else None
    found, more = await info.context.state.webhooks.deliveries(
        status=None if status is None else DeliveryStatus(status.value),
        first=first,
        after=after_id,
    )
    edges = [
        WebhookDeliveryEdge(cursor=encode_cursor(d.id), node=WebhookDeliveryType.of(d))
        for d in found
    ]
    return WebhookDeliveryConnection(edges=edges, page_info=PageInfo.of(edges, more=more))
