"""The webhook resolvers and types, mounted the way the app mounts them."""

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import strawberry

from profiles.webhooks import graphql as webhook_graphql
from profiles.webhooks.service import WebhookService
from tests.profiles.webhooks.helpers import Receiver, transition, utcnow


@strawberry.type
class Query:
    webhooks = strawberry.field(resolver=webhook_graphql.webhooks)
    webhook_deliveries = strawberry.field(resolver=webhook_graphql.webhook_deliveries)


@strawberry.type
class Mutation:
    create_webhook = strawberry.mutation(resolver=webhook_graphql.create_webhook)
    delete_webhook = strawberry.mutation(resolver=webhook_graphql.delete_webhook)
    resume_webhook = strawberry.mutation(resolver=webhook_graphql.resume_webhook)
    redeliver_webhook = strawberry.mutation(resolver=webhook_graphql.redeliver_webhook)


SCHEMA = strawberry.Schema(query=Query, mutation=Mutation)


@dataclass
class _State:
    webhooks: WebhookService


@dataclass
class _Context:
    state: _State


async def _run(service: WebhookService, query: str, **variables: Any) -> dict[str, Any]:
    result = await SCHEMA.execute(
        query, variable_values=variables, context_value=_Context(_State(service))
    )
    assert result.errors is None, result.errors
    assert result.data is not None
    return result.data


CREATE = """
mutation($segmentId: String!, $url: String!, $changes: [WebhookChange!]) {
  createWebhook(segmentId: $segmentId, url: $url, changes: $changes) {
    __typename
    ... on WebhookCreated { secret webhook { id segmentId url changes active } }
    ... on InvalidInput { field message }
  }
}
"""


async def test_create_webhook_returns_the_secret_once(
    service: WebhookService, receiver: Receiver
) -> None:
    url = receiver.hook()
    created = await _run(service, CREATE, segmentId="vip", url=url, changes=["ENTERED"])
    listed = await _run(service, 'query { webhooks(segmentId: "vip") { id url changes active } }')

    result = created["createWebhook"]
    assert result["__typename"] == "WebhookCreated"
    assert result["secret"].startswith("whsec_")
    assert result["webhook"]["changes"] == ["ENTERED"]
    assert listed["webhooks"] == [
        {"id": result["webhook"]["id"], "url": url, "changes": ["ENTERED"], "active": True}
    ]
    assert "secret" not in str(SCHEMA.as_str().split("type Webhook {")[1].split("}")[0])


async def test_a_bad_url_is_an_invalid_input_naming_the_field(service: WebhookService) -> None:
    created = await _run(service, CREATE, segmentId="vip", url="https://u:p@example.com/")

    assert created["createWebhook"] == {
        "__typename": "InvalidInput",
        "field": "url",
        "message": "the URL must not contain credentials (user:password@)",
    }
    assert await service.subscriptions() == []


async def test_deliveries_page_and_a_dead_one_is_redelivered(
    service: WebhookService, receiver: Receiver
) -> None:
    url = receiver.hook(500, 500, 500)
    await service.subscribe("vip", url)
    t0 = utcnow()
    await service.enqueue([transition(profile_id="prf_0")], now=t0)
    for seconds in (0, 10, 30):
        await service.deliver_due(now=t0 + timedelta(seconds=seconds))
    await service.enqueue([transition(profile_id=f"prf_{n}") for n in (1, 2)], now=t0)
    page = """
    query($status: WebhookDeliveryStatus, $after: String) {
      webhookDeliveries(status: $status, first: 2, after: $after) {
        edges { cursor node { id status attempts lastStatus lastError type profileId } }
        pageInfo { hasNextPage endCursor }
      }
    }
    """

    first = (await _run(service, page))["webhookDeliveries"]
    rest = (await _run(service, page, after=first["pageInfo"]["endCursor"]))["webhookDeliveries"]
    [dead] = (await _run(service, page, status="DEAD"))["webhookDeliveries"]["edges"]
    redeliver = """
    mutation($id: ID!) {
      redeliverWebhook(outboxId: $id) {
        __typename
        ... on WebhookDelivery { status attempts }
        ... on RedeliveryRefused { message }
        ... on WebhookDeliveryNotFound { message }
      }
    }
    """
    again = (await _run(service, redeliver, id=dead["node"]["id"]))["redeliverWebhook"]
    twice = (await _run(service, redeliver, id=dead["node"]["id"]))["redeliverWebhook"]
    missing = (await _run(service, redeliver, id="whd_nope"))["redeliverWebhook"]

    assert len(first["edges"]) == 2
    assert first["pageInfo"]["hasNextPage"]
    assert len(rest["edges"]) == 1
    assert not rest["pageInfo"]["hasNextPage"]
    assert dead["node"]["attempts"] == 3
    assert dead["node"]["lastStatus"] == 500
    assert dead["node"]["type"] == "segment.entered"
    assert again == {"__typename": "WebhookDelivery", "status": "PENDING", "attempts": 0}
    assert twice["__typename"] == "RedeliveryRefused"
    assert missing["__typename"] == "WebhookDeliveryNotFound"


async def test_delete_and_resume_webhook(service: WebhookService, receiver: Receiver) -> None:
    subscription, _ = await service.subscribe("vip", receiver.hook())
    resume = """
    mutation($id: ID!) {
      resumeWebhook(id: $id) { __typename ... on Webhook { active } }
    }
    """

    resumed = await _run(service, resume, id=subscription.id)
    deleted = await _run(
        service, "mutation($id: ID!) { deleteWebhook(id: $id) }", id=subscription.id
    )
    again = await _run(service, "mutation($id: ID!) { deleteWebhook(id: $id) }", id=subscription.id)
    gone = await _run(service, resume, id=subscription.id)

    assert resumed["resumeWebhook"] == {"__typename": "Webhook", "active": True}
    assert deleted == {"deleteWebhook": True}
    assert again == {"deleteWebhook": False}
    assert gone["resumeWebhook"] == {"__typename": "WebhookNotFound"}


async def test_a_page_size_out_of_bounds_is_an_error(service: WebhookService) -> None:
    result = await SCHEMA.execute(
        "query { webhookDeliveries(first: 0) { edges { cursor } } }",
        context_value=_Context(_State(service)),
    )

    assert result.errors is not None
    assert "first must be between 1 and 500" in result.errors[0].message
