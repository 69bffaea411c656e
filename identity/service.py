"""Identity reports and admin operations, across the identity graph and the profiles."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from identity.events import STATUS_TRAITS
from identity.store import IdentityStore
from profiles.store import ProfileStore


@dataclass(frozen=True)
class ValidationCount:
    """How many live profiles hold an email or phone in one validation state."""

    field: str
    status: str
    reason: str | None
    profiles: int


@dataclass(frozen=True)
class SharedIdentifier:
    """An identifier that stopped linking because too many people used it."""

    kind: str
    value: str
    shared_at: datetime
    people: int  # distinct user ids seen with it
    held_by: str | None  # the profile that held it before
    device_profile: str  # the profile its anonymous activity goes to now


class IdentityService:
    """Answers admins' questions about identity resolution."""

    def __init__(self, *, identities: IdentityStore, profiles: ProfileStore) -> None:
        self.identities = identities
        self.profiles = profiles

    async def validation_report(self) -> list[ValidationCount]:
        """Returns the counts of profiles per field, validation status and reason."""
        rows: list[ValidationCount] = []
        for field_name, (status_key, reason_key) in STATUS_TRAITS.items():
            counts = await self.profiles.count_by_traits(status_key, reason_key)
            for (status, reason), n in counts.items():
                rows.append(ValidationCount(field_name, str(status), reason, n))
        return sorted(
            rows, key=lambda r: (r.field, r.status != "valid", -r.profiles, r.reason or "")
        )

    async def shared_identifiers(self, *, first: int = 100) -> list[SharedIdentifier]:
        """Returns identifiers found shared, most recent first."""
        return [_shared(doc) for doc in await self.identities.shared(first=first)]


def _shared(doc: dict[str, Any]) -> SharedIdentifier:
    kind, _, value = str(doc["_id"]).partition(":")
    return SharedIdentifier(
        kind=kind,
        value=value,
        shared_at=doc["shared_at"],
        people=1 + len(doc.get("seen_with", ())),
        held_by=doc.get("held_by"),
        device_profile=doc["profile_id"],
    )
