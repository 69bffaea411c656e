"""GraphQL types of identity resolution, for the admin console."""

from datetime import datetime

import strawberry

from identity import service as identity_service


@strawberry.type(description="How many live profiles hold an email or phone in one state.")
class ValidationCount:
    field: str = strawberry.field(description="`email` or `phone`.")
    status: str = strawberry.field(description="`valid`, `invalid` or `blocked`.")
    reason: str | None = strawberry.field(description="Why not valid, as a short code.")
    profiles: int

    @classmethod
    def of(cls, row: identity_service.ValidationCount) -> "ValidationCount":
        return cls(field=row.field, status=row.status, reason=row.reason, profiles=row.profiles)


@strawberry.type(description="An identifier seen with too many people; it links no one now.")
class SharedIdentifier:
    kind: str
    value: str
    shared_at: datetime
    people: int = strawberry.field(description="Distinct user ids it was seen with.")
    held_by: strawberry.ID | None = strawberry.field(description="The profile that held it.")
    device_profile: strawberry.ID = strawberry.field(
        description="The profile its anonymous activity goes to from now on."
    )

    @classmethod
    def of(cls, item: identity_service.SharedIdentifier) -> "SharedIdentifier":
        return cls(
            kind=item.kind,
            value=item.value,
            shared_at=item.shared_at,
            people=item.people,
            held_by=strawberry.ID(item.held_by) if item.held_by else None,
            device_profile=strawberry.ID(item.device_profile),
        )
