"""Built-in segments from the lifecycle-marketing playbook, installable with one command."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from profiles.segments.rules import LANGUAGE_VERSION

ORDER = "Order Completed"
CART_ADD = "Product Added"
OPENED = "Email Opened"
CLICKED = "Email Link Clicked"


@dataclass(frozen=True)
class Template:
    """A named rule with a stable segment id, so installing twice changes nothing."""

    id: str
    name: str
    description: str
    rule: Mapping[str, Any]

    def definition(self) -> dict[str, Any]:
        """Returns the segment definition, in the current language version."""
        return {"version": LANGUAGE_VERSION, "rule": dict(self.rule)}


def _did(name: str, *, within: str | None = None, at_least: int = 1) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": "event", "name": name, "count": {"min": at_least}}
    if within is not None:
        condition["within"] = within
    return condition


def _did_not(name: str, *, within: str | None = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": "event", "name": name, "count": {"max": 0}}
    if within is not None:
        condition["within"] = within
    return condition


_FREQUENT = _did(ORDER, within="90d", at_least=2)
_ENGAGED = {"type": "any", "of": [_did(OPENED, within="30d"), _did(CLICKED, within="30d")]}
_BUYER = {"type": "stat", "key": "orders", "op": "gte", "value": 1}


def _quadrant(frequent: bool, engaged: bool) -> dict[str, Any]:
    return {
        "type": "all",
        "of": [
            _BUYER,
            _FREQUENT if frequent else {"type": "not", "rule": _FREQUENT},
            _ENGAGED if engaged else {"type": "not", "rule": _ENGAGED},
        ],
    }


TEMPLATES: tuple[Template, ...] = (
    Template(
        "seg_cart_abandoners",
        "Cart Abandoners",
        "Added to cart, no order since, and 48 hours have passed.",
        {
            "type": "since",
            "anchor": {"name": CART_ADD},
            "elapsed": "48h",
            "then": {"name": ORDER},
            "count": {"max": 0},
        },
    ),
    Template(
        "seg_active_buyers",
        "Active Buyers",
        "Ordered in the last 30 days.",
        _did(ORDER, within="30d"),
    ),
    Template(
        "seg_dormant",
        "Dormant",
        "No activity of any kind in 60 days.",
        {"type": "stat", "key": "last_seen", "op": "lt", "value": {"relative": "-60d"}},
    ),
    Template(
        "seg_new_visitors",
        "New Visitors",
        "Never ordered, and visited in the last 7 days.",
        {
            "type": "all",
            "of": [
                _did_not(ORDER),
                {"type": "event", "event_type": "page", "within": "7d", "count": {"min": 1}},
            ],
        },
    ),
    Template(
        "seg_high_engagement",
        "High Engagement",
        "Opened at least 3 emails or clicked at least once in the last 30 days.",
        {
            "type": "any",
            "of": [_did(OPENED, within="30d", at_least=3), _did(CLICKED, within="30d")],
        },
    ),
    Template(
        "seg_low_engagement",
        "Low Engagement",
        "Has an email address but opened and clicked nothing in the last 60 days.",
        {
            "type": "all",
            "of": [
                {"type": "trait", "key": "email", "op": "exists"},
                _did_not(OPENED, within="60d"),
                _did_not(CLICKED, within="60d"),
            ],
        },
    ),
    Template(
        "seg_frequent_engaged",
        "Frequent buyers, engaged",
        "2+ orders in 90 days, and opened or clicked an email in 30 days.",
        _quadrant(frequent=True, engaged=True),
    ),
    Template(
        "seg_frequent_unengaged",
        "Frequent buyers, not engaged",
        "2+ orders in 90 days, but no email opened or clicked in 30 days.",
        _quadrant(frequent=True, engaged=False),
    ),
    Template(
        "seg_occasional_engaged",
        "Occasional buyers, engaged",
        "Has ordered, fewer than 2 orders in 90 days, opened or clicked in 30 days.",
        _quadrant(frequent=False, engaged=True),
    ),
    Template(
        "seg_occasional_unengaged",
        "Occasional buyers, not engaged",
        "Has ordered, fewer than 2 orders in 90 days, no email opened or clicked in 30 days.",
        _quadrant(frequent=False, engaged=False),
    ),
)
