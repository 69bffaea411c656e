"""Profiles and events for score tests, written as the profile builder stores them."""

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from profiles.stats import encode_name
from profiles.store import PROFILES

Db = AsyncDatabase[dict[str, Any]]

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def profile_doc(
    profile_id: str,
    stats: Mapping[str, Any],
    *,
    computed: Mapping[str, Any] | None = None,
    merged_into: str | None = None,
) -> dict[str, Any]:
    """Returns a profile document in the stored shape."""
    return {
        "_id": profile_id,
        "identifiers": [],
        "traits": {},
        "stats": dict(stats),
        "computed": dict(computed or {}),
        "segments": [],
        "consent": {},
        "version": 0,
        "created_at": NOW - timedelta(days=500),
        "updated_at": NOW,
        "merged_into": merged_into,
    }


def order_stats(*, days: float, orders: int, cents: int) -> dict[str, Any]:
    """Returns stats of a customer whose last order was `days` before NOW."""
    last = NOW - timedelta(days=days)
    return {
        "event_count": orders,
        "first_seen": last - timedelta(days=30),
        "last_seen": last,
        "orders": orders,
        "revenue_cents": cents,
        "first_order_at": last - timedelta(days=30),
        "last_order_at": last,
        "event_counts": {encode_name("Order Completed"): orders},
    }


def stored_event(
    n: int, profile_id: str, at: datetime, *, event: str | None, **properties: Any
) -> dict[str, Any]:
    """Returns an applied event of a profile: a track event if `event` is given, else a page."""
    return {
        "_id": f"evt_{profile_id}_{n:04d}",
        "source": "web",
        "message_id": f"m_{profile_id}_{n}",
        "type": "track" if event else "page",
        "event": event,
        "name": None,
        "properties": properties,
        "timestamp": at,
        "received_at": at,
        "status": "applied",
        "profile_id": profile_id,
    }


# Three kinds of customer, told apart by spend, email and browsing: for each, ranges of
# days since last seen, orders, revenue in cents, email opens (of 20 delivered),
# clicks, page views and active days, and the category of its product views.
KINDS: dict[str, dict[str, Any]] = {
    "spender": {
        "away": (1, 10),
        "orders": (8, 15),
        "cents": (80_000, 200_000),
        "opens": (1, 3),
        "clicks": (0, 0),
        "views": (20, 40),
        "days": (8, 12),
        "category": "Electronics",
    },
    "reader": {
        "away": (20, 40),
        "orders": (1, 2),
        "cents": (2_000, 6_000),
        "opens": (15, 20),
        "clicks": (8, 12),
        "views": (5, 10),
        "days": (3, 5),
        "category": "Books",
    },
    "browser": {
        "away": (100, 200),
        "orders": (0, 0),
        "cents": (0, 0),
        "opens": (0, 1),
        "clicks": (0, 0),
        "views": (60, 100),
        "days": (2, 3),
        "category": "Garden",
    },
}
PRODUCT_VIEWS = 3  # on the first days of each profile's activity


async def seed_three_kinds(db: Db, *, per_kind: Sequence[int] = (70, 65, 65)) -> dict[str, str]:
    """Stores profiles of the three kinds with their events; returns each profile's kind."""
    rng = random.Random(11)
    profiles: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    kinds: dict[str, str] = {}
    for kind, count in zip(KINDS, per_kind, strict=True):
        spec = KINDS[kind]
        for _ in range(count):
            pid = f"prf_{len(kinds):05d}"
            kinds[pid] = kind
            drawn = {
                key: rng.randint(*spec[key])
                for key in ("orders", "cents", "opens", "clicks", "views", "days")
            }
            last_seen = NOW - timedelta(days=rng.uniform(*spec["away"]))
            day_events = [
                stored_event(d, pid, last_seen - timedelta(days=d), event=None)
                if d >= PRODUCT_VIEWS
                else stored_event(
                    d,
                    pid,
                    last_seen - timedelta(days=d),
                    event="Product Viewed",
                    category=spec["category"],
                )
                for d in range(max(drawn["days"], PRODUCT_VIEWS))
            ]
            events += day_events
            stats: dict[str, Any] = {
                "event_count": len(day_events) + drawn["views"],
                "first_seen": last_seen - timedelta(days=drawn["days"]),
                "last_seen": last_seen,
                "page_views": drawn["views"],
                "email_opens": drawn["opens"],
                "email_clicks": drawn["clicks"],
                "event_counts": {encode_name("Email Delivered"): 20},
            }
            if drawn["orders"]:
                stats |= {
                    "orders": drawn["orders"],
                    "revenue_cents": drawn["cents"],
                    "last_order_at": last_seen,
                }
            profiles.append(profile_doc(pid, stats))
    await db[PROFILES].insert_many(profiles)
    await db["events"].insert_many(events)
    return kinds
