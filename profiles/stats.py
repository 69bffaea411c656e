"""Activity statistics of a profile, derived from its events with no I/O.

Every update is commutative ($inc, $min, $max), so the order in which events
are applied never changes the result.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ORDER_COMPLETED = "Order Completed"
EMAIL_OPENED = "Email Opened"
EMAIL_LINK_CLICKED = "Email Link Clicked"


def encode_name(name: str) -> str:
    """Returns an event name usable as a MongoDB field name ('.', '$' and '%' escaped)."""
    return name.replace("%", "%25").replace(".", "%2E").replace("$", "%24").replace("\0", "%00")


def decode_name(encoded: str) -> str:
    """Returns the event name `encode_name` encoded."""
    return encoded.replace("%00", "\0").replace("%24", "$").replace("%2E", ".").replace("%25", "%")


@dataclass(frozen=True)
class ActivityEvent:
    """What stats need of one event."""

    type: str
    name: str | None  # track event name, or page/screen name
    timestamp: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class StatsDelta:
    """Commutative changes to one profile's stats."""

    inc: dict[str, int] = field(default_factory=dict)
    min: dict[str, datetime] = field(default_factory=dict)
    max: dict[str, datetime] = field(default_factory=dict)

    def add(self, path: str, amount: int = 1) -> None:
        """Adds `amount` to a counter."""
        self.inc[path] = self.inc.get(path, 0) + amount

    def earliest(self, path: str, at: datetime) -> None:
        """Keeps the earliest instant."""
        self.min[path] = min(self.min.get(path, at), at)

    def latest(self, path: str, at: datetime) -> None:
        """Keeps the latest instant."""
        self.max[path] = max(self.max.get(path, at), at)

    def update_document(self) -> dict[str, Any]:
        """Returns the MongoDB update that applies this delta under `stats.`."""
        update: dict[str, Any] = {}
        for operator, values in (("$inc", self.inc), ("$min", self.min), ("$max", self.max)):
            if values:
                update[operator] = {f"stats.{path}": v for path, v in values.items()}
        return update


def activity_of(event: Mapping[str, Any]) -> ActivityEvent:
    """Returns what stats need of a stored event."""
    return ActivityEvent(
        type=event["type"],
        name=event.get("event") if event["type"] == "track" else event.get("name"),
        timestamp=event["timestamp"],
        properties=event.get("properties") or {},
    )


def _money(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = float(value)
    except ValueError:
        return None
    return amount if math.isfinite(amount) else None


def delta_for(events: Iterable[ActivityEvent]) -> StatsDelta:
    """Returns the stats change that a profile's new events make."""
    delta = StatsDelta()
    for event in events:
        delta.add("event_count")
        delta.earliest("first_seen", event.timestamp)
        delta.latest("last_seen", event.timestamp)
        if event.type == "page":
            delta.add("page_views")
        elif event.type == "screen":
            delta.add("screen_views")
        elif event.type == "track" and event.name:
            delta.add(f"event_counts.{encode_name(event.name)}")
            _commerce_and_email(delta, event)
    return delta


def _commerce_and_email(delta: StatsDelta, event: ActivityEvent) -> None:
    if event.name == ORDER_COMPLETED:
        delta.add("orders")
        delta.latest("last_order_at", event.timestamp)
        delta.earliest("first_order_at", event.timestamp)
        # Segment's e-commerce spec: `revenue`, else `total`.
        amount = _money(event.properties.get("revenue"))
        if amount is None:
            amount = _money(event.properties.get("total"))
        if amount is not None:
            # Whole cents, so that sums do not depend on the order of addition.
            delta.add("revenue_cents", round(amount * 100))
    elif event.name == EMAIL_OPENED:
        delta.add("email_opens")
        delta.latest("last_email_open_at", event.timestamp)
    elif event.name == EMAIL_LINK_CLICKED:
        delta.add("email_clicks")
        delta.latest("last_email_click_at", event.timestamp)


def readable(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Returns stats with event names decoded, for readers."""
    shown = dict(stats)
    if "revenue_cents" in shown:
        shown["revenue"] = shown.pop("revenue_cents") / 100
    if "event_counts" in shown:
        shown["event_counts"] = {decode_name(k): v for k, v in shown["event_counts"].items()}
    return shown


def totals(events: Iterable[ActivityEvent]) -> dict[str, Any]:
    """Returns a profile's whole stats document computed from all its events (after a merge)."""
    delta = delta_for(events)
    stats: dict[str, Any] = {}
    for values in (delta.inc, delta.min, delta.max):
        for path, value in values.items():
            head, _, rest = path.partition(".")
            if rest:
                stats.setdefault(head, {})[rest] = value
            else:
                stats[head] = value
    return stats
