"""Webhooks' expected failures."""

from http import HTTPStatus

from profiles.errors import KindredError


class InvalidWebhook(KindredError):
    """A subscription's argument is unusable; `field` names it."""

    code = "invalid_webhook"
    status = HTTPStatus.UNPROCESSABLE_ENTITY

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class WebhookNotFound(KindredError):
    """No webhook subscription has that id."""

    code = "webhook_not_found"
    status = HTTPStatus.NOT_FOUND


class DeliveryNotFound(KindredError):
    """No outbox row has that id."""

    code = "webhook_delivery_not_found"
    status = HTTPStatus.NOT_FOUND


class RedeliveryRefused(KindredError):
    """A delivery cannot be sent again: it is not dead, or its subscription is paused or gone."""

    code = "webhook_redelivery_refused"
    status = HTTPStatus.CONFLICT
