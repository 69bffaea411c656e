"""GraphQL types of segments: definitions, members, the membership log."""

from datetime import datetime
from enum import Enum
from typing import Any, Protocol

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON
from strawberry.types import Info

from profiles.graphql import (
    InvalidPageSize,
    PageInfo,
    ProfileType,
    as_json,
    decode_cursor,
    encode_cursor,
)
from profiles.models import Profile
from profiles.segments.service import SegmentService, mailable_pipeline
from profiles.segments.store import LogEntry, SegmentRecord
from profiles.service import utcnow

MAX_PAGE = 500


class SegmentReadContext(Protocol):
    """What segment resolvers need from the per-request context."""

    segments: SegmentService
    profile_by_id: DataLoader[tuple[str, tuple[str, ...] | None], Profile | None]


@strawberry.enum(name="SegmentChange", description="Whether a profile entered or left.")
class SegmentChangeType(Enum):
    ENTERED = "entered"
    EXITED = "exited"


@strawberry.type(description="A profile entering or leaving a segment, and why.")
class SegmentLogEntry:
    id: strawberry.ID
    segment_id: strawberry.ID
    segment_version: int
    profile_id: strawberry.ID
    change: SegmentChangeType
    at: datetime
    cause: JSON = strawberry.field(
        description="`{kind: event, event_id}`, `{kind: time}`, `{kind: recompute}`, …"
    )

    @classmethod
    def of(cls, entry: LogEntry) -> "SegmentLogEntry":
        return cls(
            id=strawberry.ID(entry.id),
            segment_id=strawberry.ID(entry.segment_id),
            segment_version=entry.segment_version,
            profile_id=strawberry.ID(entry.profile_id),
            change=SegmentChangeType(entry.change.value),
            at=entry.at,
            cause=as_json(dict(entry.cause)),
        )


@strawberry.type
class SegmentLogEdge:
    cursor: str
    node: SegmentLogEntry


@strawberry.type
class SegmentLogConnection:
    edges: list[SegmentLogEdge]
    page_info: PageInfo


@strawberry.type
class SegmentMemberEdge:
    cursor: str
    node: ProfileType


@strawberry.type
class SegmentMemberConnection:
    edges: list[SegmentMemberEdge]
    page_info: PageInfo


def _page_size(first: int) -> None:
    if not 1 <= first <= MAX_PAGE:
        raise InvalidPageSize(f"first must be between 1 and {MAX_PAGE}")


async def log_page(
    service: SegmentService,
    *,
    segment_id: str | None = None,
    profile_id: str | None = None,
    first: int,
    after: str | None,
) -> SegmentLogConnection:
    """Returns a page of the membership log of a segment or of a profile, newest first."""
    _page_size(first)
    position = decode_cursor(after, parts=1)[0] if after is not None else None
    entries, more = await service.store.history(
        segment_id=segment_id, profile_id=profile_id, first=first, after=position
    )
    edges = [
        SegmentLogEdge(cursor=encode_cursor(e.id), node=SegmentLogEntry.of(e)) for e in entries
    ]
    return SegmentLogConnection(edges=edges, page_info=PageInfo.of(edges, more=more))


@strawberry.type(name="Segment", description="A rule over profiles, kept current in real time.")
class SegmentType:
    record: strawberry.Private[SegmentRecord]
    id: strawberry.ID
    name: str
    description: str
    version: int = strawberry.field(description="Bumped by every change of the definition.")
    size: int = strawberry.field(description="Members now.")
    template: str | None = strawberry.field(description="The built-in template it came from.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: SegmentRecord) -> "SegmentType":
        return cls(
            record=record,
            id=strawberry.ID(record.id),
            name=record.name,
            description=record.description,
            version=record.version,
            size=record.size,
            template=record.template,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )

    @strawberry.field(description="The rule, as versioned JSON (see docs/segments.md).")
    def definition(self) -> JSON:
        return as_json(dict(self.record.definition))

    @strawberry.field(
        description="Members in id order; `mailable: true` keeps those contactable by email "
        "(valid email, not unsubscribed, email_marketing consent granted)."
    )
    async def members(
        self,
        info: Info[SegmentReadContext, None],
        first: int = 50,
        after: str | None = None,
        mailable: bool = False,
    ) -> SegmentMemberConnection:
        _page_size(first)
        position = decode_cursor(after, parts=1)[0] if after is not None else None
        pipeline = mailable_pipeline(now=utcnow()) if mailable else []
        ids, more = await info.context.segments.store.member_page(
            self.record.id, first=first, after=position, pipeline=pipeline
        )
        profiles = await info.context.profile_by_id.load_many([(pid, None) for pid in ids])
        edges = [
            SegmentMemberEdge(cursor=encode_cursor(p.id), node=ProfileType.of(p))
            for p in profiles
            if p is not None
        ]
        return SegmentMemberConnection(edges=edges, page_info=PageInfo.of(edges, more=more))

    @strawberry.field(description="Entries and exits, newest first.")
    async def history(
        self, info: Info[SegmentReadContext, None], first: int = 50, after: str | None = None
    ) -> SegmentLogConnection:
        return await log_page(
            info.context.segments, segment_id=self.record.id, first=first, after=after
        )

    @strawberry.field(description="Every version of the definition, newest first.")
    async def versions(self, info: Info[SegmentReadContext, None]) -> list[JSON]:
        found = await info.context.segments.store.versions_of(self.record.id)
        return [as_json({k: v for k, v in doc.items() if k != "_id"}) for doc in found]


@strawberry.input(description="A segment's name, description and rule.")
class SegmentInput:
    name: str
    definition: JSON = strawberry.field(description='`{"version": 1, "rule": {…}}`')
    description: str = ""


@strawberry.type(description="No segment has that id.")
class SegmentNotFound:
    message: str


@strawberry.type(description="The segment changed since the version given; read it again.")
class SegmentConflict:
    message: str
    version: int


def definition_of(value: Any) -> dict[str, Any]:
    """Returns a definition given as the JSON scalar, or raises ValueError."""
    if not isinstance(value, dict):
        raise ValueError('definition: expected an object like {"version": 1, "rule": {…}}')
    return value
