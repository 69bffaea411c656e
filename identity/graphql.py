"""GraphQL types of identity resolution, for the admin console."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

import strawberry

from identity import merge as merge_rules
from identity import service as identity_service
from identity.store import Suggestion, SuggestionStatus
from profiles.graphql import InvalidInput, PageInfo, ProfileType


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
            evidence=_evidence(item.evidence),
            profiles=profiles,
        )


def _evidence(evidence: Sequence[Mapping[str, Any]]) -> list[FieldEvidence]:
    return [FieldEvidence(field=e["field"], level=e["level"], weight=e["weight"]) for e in evidence]


@strawberry.type
class MergeSuggestionEdge:
    cursor: str
    node: MergeSuggestion


@strawberry.type
class MergeSuggestionConnection:
    edges: list[MergeSuggestionEdge]
    page_info: PageInfo


MergeRuleType = strawberry.enum(
    merge_rules.Rule, name="MergeRule", description="The rule that refused a merge decision."
)
MergeStatusType = strawberry.enum(
    merge_rules.MergeStatus, name="MergeStatus", description="Whether a merge stands."
)
AuditActionType = strawberry.enum(
    identity_service.AuditAction, name="AuditAction", description="What an admin did."
)


@strawberry.type(description="Who made a merge: an admin's API key, or an automatic rule.")
class MergeActor:
    kind: str = strawberry.field(description="`admin` or `automatic`.")
    key_id: str | None
    key_name: str | None
    rule: str | None = strawberry.field(description="For automatic merges, the rule.")

    @classmethod
    def of(cls, actor: merge_rules.Actor) -> "MergeActor":
        return cls(
            kind=actor.kind.value, key_id=actor.key_id, key_name=actor.key_name, rule=actor.rule
        )


@strawberry.type(description="How many rows a merge moved, or an unmerge gave back.")
class MovedCounts:
    identities: int
    observations: int
    events: int

    @classmethod
    def of(cls, moved: merge_rules.Moved) -> "MovedCounts":
        return cls(
            identities=moved.identities, observations=moved.observations, events=moved.events
        )


@strawberry.type(name="Merge", description="One merge in the ledger, and its undoing if undone.")
class MergeType:
    id: strawberry.ID
    survivor_id: strawberry.ID
    merged_id: strawberry.ID
    actor: MergeActor
    reason: str
    merged_at: datetime
    status: MergeStatusType  # type: ignore[valid-type]
    score: float | None = strawberry.field(description="The match score, if a matcher's.")
    evidence: list[FieldEvidence]
    moved: MovedCounts
    undone_at: datetime | None
    undone_by: MergeActor | None
    undo_reason: str | None
    given_back: MovedCounts

    @classmethod
    def of(cls, record: merge_rules.MergeRecord) -> "MergeType":
        return cls(
            id=strawberry.ID(record.id),
            survivor_id=strawberry.ID(record.survivor),
            merged_id=strawberry.ID(record.merged),
            actor=MergeActor.of(record.actor),
            reason=record.reason,
            merged_at=record.merged_at,
            status=record.status,
            score=record.score,
            evidence=_evidence(record.evidence),
            moved=MovedCounts.of(record.moved),
            undone_at=record.undone_at,
            undone_by=MergeActor.of(record.undone_by) if record.undone_by else None,
            undo_reason=record.undo_reason,
            given_back=MovedCounts.of(record.given_back),
        )


@strawberry.type(description="A rule forbade the merge decision; nothing was changed.")
class MergeRefused:
    rule: MergeRuleType  # type: ignore[valid-type]
    message: str

    @classmethod
    def of(cls, refused: identity_service.MergeRefused) -> "MergeRefused":
        return cls(rule=refused.rule, message=refused.message)


@strawberry.type(description="The merge made, and the surviving profile as it is now.")
class Merged:
    merge: MergeType
    profile: ProfileType


@strawberry.type(description="The merge undone, and both profiles as they are again.")
class Unmerged:
    merge: MergeType
    profiles: list[ProfileType]


@strawberry.type(description="The suggestion, now rejected: the two are not the same person.")
class SuggestionRejected:
    suggestion: MergeSuggestion


MergeResult = Annotated[Merged | MergeRefused | InvalidInput, strawberry.union("MergeResult")]
UnmergeResult = Annotated[Unmerged | MergeRefused | InvalidInput, strawberry.union("UnmergeResult")]
RejectSuggestionResult = Annotated[
    SuggestionRejected | MergeRefused | InvalidInput, strawberry.union("RejectSuggestionResult")
]


@strawberry.type(description="One admin action, from the audit log.")
class AuditEntry:
    id: strawberry.ID
    at: datetime
    actor: MergeActor
    action: AuditActionType  # type: ignore[valid-type]
    target: str = strawberry.field(description="The merge or suggestion acted on.")
    profiles: list[strawberry.ID]
    reason: str
    outcome: str = strawberry.field(description="`done`, or `refused:<rule>`.")

    @classmethod
    def of(cls, entry: identity_service.AuditEntry) -> "AuditEntry":
        return cls(
            id=strawberry.ID(entry.id),
            at=entry.at,
            actor=MergeActor.of(entry.actor),
            action=entry.action,
            target=entry.target,
            profiles=[strawberry.ID(p) for p in entry.profiles],
            reason=entry.reason,
            outcome=entry.outcome,
        )


@strawberry.type
class AuditEdge:
    cursor: str
    node: AuditEntry


@strawberry.type
class AuditConnection:
    edges: list[AuditEdge]
    page_info: PageInfo
