"""What one event tells identity resolution, with no I/O: its keys and its validation flags."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from identity.errors import InvalidIdentifier
from identity.graph import Limits
from identity.normalize import (
    Blocklist,
    Checked,
    canonical_email_key,
    check_email,
    check_phone,
    identity_key,
)

# Traits the builder derives from every observed email and phone, next to the value
# as observed: `valid`, `invalid` or `blocked`, and the reason code if not valid.
STATUS_TRAITS = {
    "email": ("email_status", "email_status_reason"),
    "phone": ("phone_status", "phone_status_reason"),
}


@dataclass(frozen=True)
class IdentityRules:
    """The configurable rules of identity resolution."""

    blocklist: Blocklist = field(default_factory=Blocklist)
    limits: Limits = field(default_factory=Limits)
    phone_region: str = "US"
    # Also link by the provider-folded address (`email_canonical:`), so that
    # `j.smith+shop@gmail.com` and `jsmith@gmail.com` meet. Off by default: two
    # people can own addresses that fold together at a provider we misjudge.
    canonical_emails: bool = False

    def check(self, kind: str, value: object) -> Checked:
        """Returns the key of an email or phone trait, or why it cannot be one."""
        checked = (
            check_email(value) if kind == "email" else check_phone(value, region=self.phone_region)
        )
        return self.blocklist.check(checked)

    def canonical_email(self, value: object) -> str | None:
        """Returns the provider-folded key of a valid, unblocked email, where one applies."""
        if self.check("email", value).key is None:
            return None
        key = canonical_email_key(value)
        return None if key is None or self.blocklist.blocks(key) else key

    def key(self, kind: str, value: object) -> str | None:
        """Returns the identity key of an id (`user_id`, `anonymous_id`…) unless unusable."""
        if value is None or value == "":
            return None
        try:
            key = identity_key(kind, value)
        except InvalidIdentifier:
            return None
        return None if self.blocklist.blocks(key) else key


def _trait_sources(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if event.get("type") == "group":  # a group's traits describe the company
        return []
    traits = event.get("traits") or {}
    context_traits = (event.get("context") or {}).get("traits") or {}
    return [traits, context_traits]


def identity_keys(event: Mapping[str, Any], rules: IdentityRules) -> tuple[str, ...]:
    """Returns the identity keys an event carries: ids, and valid email and phone traits."""
    keys = [
        rules.key("user_id", event.get("user_id")),
        rules.key("anonymous_id", event.get("anonymous_id")),
    ]
    if event.get("type") == "alias":
        # The earlier id of the person, usually the anonymous id of their first visits.
        keys.append(rules.key("anonymous_id", event.get("previous_id")))
    for source in _trait_sources(event):
        for kind in STATUS_TRAITS:
            if source.get(kind) not in (None, ""):
                keys.append(rules.check(kind, source[kind]).key)
        if rules.canonical_emails and source.get("email") not in (None, ""):
            keys.append(rules.canonical_email(source["email"]))
    return tuple(dict.fromkeys(k for k in keys if k is not None))


def status_traits(event: Mapping[str, Any], rules: IdentityRules) -> dict[str, str | None]:
    """Returns the validation flags of the email and phone an event observes, as traits."""
    flags: dict[str, str | None] = {}
    for source in reversed(_trait_sources(event)):  # `traits` wins over `context.traits`
        for kind, (status_key, reason_key) in STATUS_TRAITS.items():
            if source.get(kind) in (None, ""):
                continue
            checked = rules.check(kind, source[kind])
            flags[status_key] = checked.status.value
            flags[reason_key] = checked.reason
    return flags
