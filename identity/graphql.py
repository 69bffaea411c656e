"""GraphQL types of identity resolution, for the admin console."""

from datetime import datetime

import strawberry

from identity import service as identity_service
from identity.store import Suggestion, SuggestionStatus
from profiles.graphql import PageInfo, ProfileType


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


SuggestionStatusType = strawberry.enum(
    SuggestionStatus, name="SuggestionStatus", description="Where a merge suggestion stands."
)


@strawberry.type(description="One field's part in a match score.")
class FieldEvidence:
    field: str
    level: str = strawberry.field(description="How the two values compare, e.g. `jw >= 0.92`.")
    weight: float = strawberry.field(
        description="log2 of the Bayes factor: above 0 speaks for a match, below against."
    )


@strawberry.type(description="Two profiles the matcher found alike, for an admin to review.")
class MergeSuggestion:
    id: strawberry.ID
    score: float = strawberry.field(description="Match probability, 0 to 1.")
    status: SuggestionStatusType  # type: ignore[valid-type]
    source: str = strawberry.field(description="`online` (the builder) or `dedupe` (a run).")
    note: str | None = strawberry.field(description="Why a sure pair was not merged, if so.")
    created_at: datetime
    updated_at: datetime
    evidence: list[FieldEvidence]
    profiles: list[ProfileType] = strawberry.field(
        description="Both profiles as they are now (a merged-away one: its survivor)."
    )

    @classmethod
    def of(cls, item: Suggestion, profiles: list[ProfileType]) -> "MergeSuggestion":
        return cls(
            id=strawberry.ID(item.id),
            score=item.score,
            status=item.status,
            source=item.source,
            note=item.note,
            created_at=item.created_at,
            updated_at=item.updated_at,
            evidence=[
                FieldEvidence(field=e["field"], level=e["level"], weight=e["weight"])
                for e in item.evidence
            ],
            profiles=profiles,
        )


@strawberry.type
class MergeSuggestionEdge:
    cursor: str
    node: MergeSuggestion


@strawberry.type
class MergeSuggestionConnection:
    edges: list[MergeSuggestionEdge]
    page_info: PageInfo
