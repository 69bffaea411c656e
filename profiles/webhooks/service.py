"""Webhooks: subscriptions, the outbox written with membership changes, signed delivery.

Delivery is at least once: a row is marked delivered only after a 2xx, so a
crash between the answer and the write sends it again. Receivers dedupe on
`Kindred-Webhook-Id`. Order is not guaranteed (a retried row arrives after
later ones); `at` and the segment version tell the order.
"""

import asyncio
import logging
import os
import random
import socket
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from profiles.segments.models import Change, Transition
from profiles.webhooks import signing
from profiles.webhooks.errors import DeliveryNotFound, RedeliveryRefused, WebhookNotFound
from profiles.webhooks.models import (
    Attempted,
    Delivery,
    DeliveryReport,
    DeliveryStatus,
    Subscription,
    body,
    check_changes,
    check_segment_id,
    check_url,
    new_subscription_id,
    to_millis,
)
from profiles.webhooks.policy import Outcome, RetryPolicy, lease_for, outcome
from profiles.webhooks.store import Document, WebhookStore

log = logging.getLogger(__name__)

USER_AGENT = "Kindred-Webhooks/1"
# What is kept of a failing receiver's answer, for the admin to read.
ERROR_CHARS = 300
_READ_AT_MOST = 4096
GONE_REASON = "the receiver answered 410 Gone"


@dataclass(frozen=True)
class WebhookConfig:
    """How webhooks are sent: time limit per request, parallelism, caching, retries."""

    timeout: timedelta = timedelta(seconds=10)
    concurrency: int = 10
    # How long `enqueue` trusts its in-process copy of the subscription list.
    cache_seconds: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # How long finished rows stay in the outbox (for the admin to look at).
    keep_delivered: timedelta = timedelta(days=7)
    keep_dead: timedelta = timedelta(days=30)


def new_http_client(config: WebhookConfig) -> httpx.AsyncClient:
    """Returns the HTTP client webhooks are sent with; redirects are not followed."""
    seconds = config.timeout.total_seconds()
    return httpx.AsyncClient(
        timeout=httpx.Timeout(seconds, connect=min(seconds, 5.0)),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        limits=httpx.Limits(max_connections=config.concurrency * 2),
    )


def worker_owner() -> str:
    """Returns a name unique to this process, used in the owner of its leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class WebhookService:
    """Subscriptions per segment, an outbox row per change, and delivery with retries.

    It owns its HTTP client (closed by `aclose`), made on the first delivery when
    none is given, so an instance that only enqueues (a profile builder) opens no
    connection pool. Any number of instances, in any number of processes, may
    deliver at once: rows are leased in MongoDB.
    """

    def __init__(
        self,
        store: WebhookStore,
        *,
        http: httpx.AsyncClient | None = None,
        config: WebhookConfig | None = None,
        owner: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.config = config or WebhookConfig()
        self._http = http
        self.owner = owner or worker_owner()
        self._clock = clock  # for the subscription cache
        self._wall = wall  # for signature timestamps: when a request really leaves
        self._rand = rand  # for jitter
        self._cache: tuple[float, dict[str, list[Subscription]]] | None = None

    @classmethod
    def on(
        cls, db: AsyncDatabase[Document], *, config: WebhookConfig | None = None
    ) -> "WebhookService":
        """Returns a service on a database."""
        return cls(WebhookStore(db), config=config)

    @property
    def http(self) -> httpx.AsyncClient:
        """Returns the HTTP client webhooks are sent with, made on first use."""
        if self._http is None:
            self._http = new_http_client(self.config)
        return self._http

    async def aclose(self) -> None:
        """Closes the HTTP client, if one was made."""
        if self._http is not None:
            await self._http.aclose()

    # Subscriptions.

    async def subscribe(
        self,
        segment_id: str,
        url: str,
        *,
        changes: Iterable[Change] = (Change.ENTERED, Change.EXITED),
        now: datetime | None = None,
    ) -> tuple[Subscription, str]:
        """Subscribes a URL to a segment's changes; returns it and its secret (shown once)."""
        subscription = Subscription(
            id=new_subscription_id(),
            segment_id=check_segment_id(segment_id),
            url=check_url(url),
            changes=check_changes(changes),
            active=True,
            created_at=to_millis(now or datetime.now(UTC)),
        )
        secret = signing.new_secret()
        await self.store.add_subscription(subscription, secret=secret)
        self._cache = None
        log.info(
            "webhook subscribed",
            extra={"webhook": subscription.id, "segment": segment_id, "host": _host(url)},
        )
        return subscription, secret

    async def unsubscribe(self, subscription_id: str, *, now: datetime | None = None) -> bool:
        """Deletes a subscription and cancels what it had pending; tells whether it existed."""
        now = now or datetime.now(UTC)
        removed = await self.store.remove_subscription(
            subscription_id, now=now, expire_at=now + self.config.keep_delivered
        )
        self._cache = None
        return removed

    async def resume(self, subscription_id: str) -> Subscription:
        """Makes a paused subscription active again; raises `WebhookNotFound`."""
        found = await self.store.set_active(
            subscription_id, active=True, reason=None, now=datetime.now(UTC)
        )
        if found is None:
            raise WebhookNotFound(f"no webhook has the id {subscription_id!r}")
        self._cache = None
        return found

    async def subscriptions(self, segment_id: str | None = None) -> list[Subscription]:
        """Returns the subscriptions of a segment, or all, oldest first (without secrets)."""
        return await self.store.list_subscriptions(segment_id=segment_id)

    # The outbox.

    async def enqueue(
        self,
        transitions: Sequence[Transition],
        *,
        session: AsyncClientSession | None = None,
        now: datetime | None = None,
    ) -> int:
        """Adds an outbox row per (active subscription wanting it, transition); returns how many.

        With a session the rows are written in the caller's transaction, so a
        membership change and its webhooks commit or vanish together. The
        subscription list comes from a cache of `cache_seconds`: a subscription
        made or resumed in another process may miss changes for that long, and a
        deleted or paused one may still get rows, which delivery then cancels or
        dead-letters. Changes made through this instance apply at once.
        """
        if not transitions:
            return 0
        by_segment = await self._active_by_segment()
        if not by_segment:
            return 0
        pairs = [
            (subscription.id, transition)
            for transition in transitions
            for subscription in by_segment.get(transition.segment_id, ())
            if subscription.wants(transition)
        ]
        return await self.store.add_deliveries(pairs, now=now or datetime.now(UTC), session=session)

    async def _active_by_segment(self) -> dict[str, list[Subscription]]:
        if self._cache is not None and self._clock() < self._cache[0]:
            return self._cache[1]
        grouped: dict[str, list[Subscription]] = defaultdict(list)
        for subscription in await self.store.list_subscriptions(active_only=True):
            grouped[subscription.segment_id].append(subscription)
        found = dict(grouped)
        self._cache = (self._clock() + self.config.cache_seconds, found)
        return found

    async def deliver_due(self, *, now: datetime, limit: int = 100) -> DeliveryReport:
        """Leases up to `limit` rows due by `now`, sends them, and records how each went."""
        ids = await self.store.due_ids(now=now, limit=limit)
        if not ids:
            return DeliveryReport()
        config = self.config
        owner = f"{self.owner}:{os.urandom(4).hex()}"
        lease = lease_for(batch=len(ids), concurrency=config.concurrency, timeout=config.timeout)
        leased = await self.store.lease(ids, now=now, until=now + lease, owner=owner)
        if not leased:
            return DeliveryReport()
        targets = await self.store.signing_targets(d.subscription_id for d in leased)
        gate = asyncio.Semaphore(config.concurrency)

        async def attempt(delivery: Delivery) -> Attempted:
            async with gate:
                return await self._attempt(delivery, targets.get(delivery.subscription_id), now)

        results = [self._expiring(r) for r in await asyncio.gather(*(attempt(d) for d in leased))]
        # Pause before recording: if this process dies in between, the rows come
        # back when the lease ends and meet a paused subscription.
        gone = sorted(
            {
                d.subscription_id
                for d, r in zip(leased, results, strict=True)
                if r.last_status == 410
            }
        )
        for subscription_id in gone:
            await self.store.set_active(subscription_id, active=False, reason=GONE_REASON, now=now)
            log.warning("webhook paused: receiver answered 410", extra={"webhook": subscription_id})
        if gone:
            self._cache = None
        recorded = await self.store.record(results, owner=owner)
        if recorded < len(results):
            # Only if a pass outlived its lease, which `lease_for` is sized to prevent.
            log.warning(
                "webhook leases lost; another worker may have sent those rows too",
                extra={"lost": len(results) - recorded},
            )
        return DeliveryReport(
            leased=len(leased),
            delivered=sum(r.status is DeliveryStatus.DELIVERED for r in results),
            retried=sum(r.status is DeliveryStatus.PENDING for r in results),
            dead=sum(r.status is DeliveryStatus.DEAD for r in results),
            cancelled=sum(r.status is DeliveryStatus.CANCELLED for r in results),
            paused=tuple(gone),
        )

    async def redeliver(self, delivery_id: str, *, now: datetime | None = None) -> Delivery:
        """Sends a dead row again: pending, due now, with a fresh count of attempts.

        Raises `DeliveryNotFound`, or `RedeliveryRefused` when the row is not dead
        or its subscription is paused (resume it first) or deleted.
        """
        found = await self.store.delivery(delivery_id)
        if found is None:
            raise DeliveryNotFound(f"no webhook delivery has the id {delivery_id!r}")
        if found.status is not DeliveryStatus.DEAD:
            raise RedeliveryRefused(
                f"only a dead delivery can be sent again; this one is {found.status.value}"
            )
        subscription = await self.store.subscription(found.subscription_id)
        if subscription is None:
            raise RedeliveryRefused("its webhook was deleted")
        if not subscription.active:
            raise RedeliveryRefused("its webhook is paused; resume it first")
        again = await self.store.redeliver(delivery_id, now=now or datetime.now(UTC))
        if again is None:
            raise RedeliveryRefused("it is no longer dead; someone redelivered it meanwhile")
        return again

    async def deliveries(
        self, *, status: DeliveryStatus | None = None, first: int = 50, after: str | None = None
    ) -> tuple[list[Delivery], bool]:
        """Returns outbox rows newest first after a cursor (a row id), and if more follow."""
        return await self.store.deliveries(status=status, first=first, after=after)

    def _expiring(self, attempted: Attempted) -> Attempted:
        """Returns the record with when its row may go, if it is finished."""
        keep = {
            DeliveryStatus.DELIVERED: self.config.keep_delivered,
            DeliveryStatus.CANCELLED: self.config.keep_delivered,
            DeliveryStatus.DEAD: self.config.keep_dead,
        }.get(attempted.status)
        return attempted if keep is None else replace(attempted, expire_at=attempted.at + keep)

    async def _attempt(
        self, delivery: Delivery, target: tuple[Subscription, str] | None, now: datetime
    ) -> Attempted:
        """Sends one row and returns how it went; never raises for the receiver's sake."""
        if target is None:
            return Attempted(
                delivery.id,
                DeliveryStatus.CANCELLED,
                at=now,
                sent=False,
                last_error="subscription deleted",
            )
        subscription, secret = target
        if not subscription.active:
            reason = subscription.paused_reason or "paused"
            return Attempted(
                delivery.id,
                DeliveryStatus.DEAD,
                at=now,
                sent=False,
                last_error=f"subscription paused ({reason}); resume it, then redeliver",
            )
        status, error = await self._post(subscription, secret, delivery)
        result = outcome(status)
        if result is Outcome.DELIVERED:
            return Attempted(
                delivery.id, DeliveryStatus.DELIVERED, at=now, sent=True, last_status=status
            )
        if result is Outcome.GONE:
            return Attempted(
                delivery.id,
                DeliveryStatus.DEAD,
                at=now,
                sent=True,
                last_status=status,
                last_error=f"{GONE_REASON}; subscription paused",
            )
        attempts = delivery.attempts + 1
        log.info(
            "webhook delivery failed",
            extra={
                "delivery": delivery.id,
                "webhook": subscription.id,
                "host": _host(subscription.url),
                "status": status,
                "attempts": attempts,
                "error": error,
            },
        )
        retry = self.config.retry
        if retry.gives_up(attempts):
            return Attempted(
                delivery.id,
                DeliveryStatus.DEAD,
                at=now,
                sent=True,
                last_status=status,
                last_error=error,
            )
        return Attempted(
            delivery.id,
            DeliveryStatus.PENDING,
            at=now,
            sent=True,
            next_attempt_at=now + retry.delay(attempts, rand=self._rand),
            last_status=status,
            last_error=error,
        )

    async def _post(
        self, subscription: Subscription, secret: str, delivery: Delivery
    ) -> tuple[int | None, str | None]:
        """POSTs a row; returns the receiver's status (None if none) and what went wrong."""
        seconds = self.config.timeout.total_seconds()
        status: int | None = None
        try:
            data = body(delivery)
            headers = {
                "Content-Type": "application/json",
                signing.SIGNATURE_HEADER: signing.sign(
                    secret, body=data, timestamp=int(self._wall())
                ),
                signing.ID_HEADER: delivery.id,
            }
            # httpx's timeouts apply per read; this one bounds the whole exchange.
            async with (
                asyncio.timeout(seconds),
                self.http.stream("POST", subscription.url, content=data, headers=headers) as r,
            ):
                status = r.status_code
                answer = await _read_some(r)
        except TimeoutError:
            return status, f"no answer within {seconds:g} s"
        except httpx.HTTPError as exc:
            return status, _clean(f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            # A bug, an odd URL or an unencodable cause must not hold the batch (or
            # come back forever): the row counts a failure, and ends dead.
            log.exception("webhook delivery failed unexpectedly", extra={"delivery": delivery.id})
            return status, _clean(f"{type(exc).__name__}: {exc}")
        if outcome(status) is Outcome.DELIVERED:
            return status, None
        return status, _clean(f"HTTP {status}: {answer}")


async def _read_some(response: httpx.Response) -> str:
    """Returns the start of a response body, reading at most a few KB of it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _READ_AT_MOST:
            break
    return b"".join(chunks)[:_READ_AT_MOST].decode("utf-8", errors="replace")


def _clean(text: str) -> str:
    """Returns text fit for a log or an admin screen: one line, no control characters."""
    flat = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    flat = " ".join(flat.split())
    return flat if len(flat) <= ERROR_CHARS else flat[: ERROR_CHARS - 1] + "…"


def _host(url: str) -> str:
    # Logs name the host only: a path or query may carry a receiver's token.
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"
