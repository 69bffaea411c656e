"""GraphQL types for reading profiles; the app assembles them into its schema."""

import base64
import binascii
from collections.abc import Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.scalars import JSON
from strawberry.types import Info

if TYPE_CHECKING:
    from profiles.segments.graphql import SegmentLogConnection

from profiles import traits as trait_rules
from profiles.errors import KindredError
from profiles.models import Profile, TraitDefinition, TraitType, TraitValue
from profiles.segments import experiments
from profiles.service import ProfileService
from profiles.stats import readable as readable_stats


class ProfileReadContext(Protocol):
    """What profile resolvers need from the per-request context."""

    profile_service: ProfileService
    profile_by_id: DataLoader[tuple[str, tuple[str, ...] | None], Profile | None]

    async def recent_events(
        self, profile_id: str, *, first: int, before: tuple[datetime, str] | None, name: str | None
    ) -> list[dict[str, Any]]:
        """Returns a profile's events, newest first, after a cursor position."""
        ...


def to_json(value: Any) -> Any:
    """Returns the value with datetimes as ISO 8601 strings, as JSON needs."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def as_json(value: Any) -> JSON:
    """Returns the value as the GraphQL JSON scalar."""
    return JSON(to_json(value))


_CURSOR_TAG = "k1"  # tells our cursors from arbitrary base64


def encode_cursor(*parts: str) -> str:
    """Returns an opaque cursor for the given position."""
    return base64.urlsafe_b64encode("\x1f".join((_CURSOR_TAG, *parts)).encode()).decode()


def decode_cursor(cursor: str, *, parts: int) -> list[str]:
    """Returns the position an opaque cursor names; raises `InvalidCursor` if it is not one."""
    try:
        decoded = base64.urlsafe_b64decode(cursor.encode()).decode().split("\x1f")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = []
    if len(decoded) != parts + 1 or decoded[0] != _CURSOR_TAG:
        raise InvalidCursor("the `after` cursor is not one this API returned")
    return decoded[1:]


class InvalidCursor(KindredError):
    """A pagination cursor was not produced by Kindred."""

    code = "invalid_cursor"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


@strawberry.type(name="TraitValue", description="A trait's current value, when and where from.")
class TraitValueType:
    value: JSON
    observed_at: datetime
    source: str

    @classmethod
    def of(cls, trait: TraitValue) -> "TraitValueType":
        return cls(value=to_json(trait.value), observed_at=trait.observed_at, source=trait.source)


@strawberry.type(name="Identity", description="An identifier the profile is known by.")
class IdentityType:
    kind: str
    value: str


@strawberry.type(description="One recorded observation of a trait.")
class TraitObservation:
    value: JSON
    observed_at: datetime
    source: str
    origin: str
    recorded_at: datetime


@strawberry.type
class TraitObservationEdge:
    cursor: str
    node: TraitObservation


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None

    @classmethod
    def of(cls, edges: Sequence[Any], *, more: bool) -> "PageInfo":
        """Returns the page info of a page of edges (each with a `cursor`)."""
        return cls(has_next_page=more, end_cursor=edges[-1].cursor if edges else None)


@strawberry.type
class TraitHistoryConnection:
    edges: list[TraitObservationEdge]
    page_info: PageInfo


MAX_HISTORY_PAGE = 500


@strawberry.type(name="Event", description="One event applied to the profile.")
class EventType:
    id: strawberry.ID
    type: str
    name: str | None = strawberry.field(description="The track event name, or the page name.")
    timestamp: datetime
    received_at: datetime
    source: str
    properties: JSON


@strawberry.type
class EventEdge:
    cursor: str
    node: EventType


@strawberry.type
class EventConnection:
    edges: list[EventEdge]
    page_info: PageInfo


@strawberry.type(name="Profile", description="One person, unified across touchpoints.")
class ProfileType:
    profile: strawberry.Private[Profile]
    id: strawberry.ID
    created_at: datetime
    updated_at: datetime
    merged_into: strawberry.ID | None

    @classmethod
    def of(cls, profile: Profile) -> "ProfileType":
        return cls(
            profile=profile,
            id=strawberry.ID(profile.id),
            created_at=profile.created_at,
            updated_at=profile.updated_at,
            merged_into=strawberry.ID(profile.merged_into) if profile.merged_into else None,
        )

    @strawberry.field(description="Identifiers this profile is known by.")
    def identities(self) -> list[IdentityType]:
        return [IdentityType(kind=i.kind, value=i.value) for i in self.profile.identifiers]

    @strawberry.field(description="One trait with its time and source; null if unknown.")
    def trait(self, key: str) -> TraitValueType | None:
        trait_rules.check_key(key)
        found = self.profile.traits.get(key)
        return None if found is None else TraitValueType.of(found)

    @strawberry.field(
        description="A flat map of trait values for templates: the given keys, or all."
    )
    def traits(self, keys: list[str] | None = None) -> JSON:
        if keys is None:
            return as_json({k: t.value for k, t in self.profile.traits.items()})
        for key in keys:
            trait_rules.check_key(key)
        found = self.profile.traits
        return as_json({k: found[k].value if k in found else None for k in keys})

    @strawberry.field(description="Every recorded observation of one trait, newest first.")
    async def trait_history(
        self,
        info: Info[ProfileReadContext, None],
        key: str,
        first: int = 20,
        after: str | None = None,
    ) -> TraitHistoryConnection:
        trait_rules.check_key(key)
        if not 1 <= first <= MAX_HISTORY_PAGE:
            raise InvalidPageSize(f"first must be between 1 and {MAX_HISTORY_PAGE}")
        position = None
        if after is not None:
            at, row_id = decode_cursor(after, parts=2)
            position = (trait_rules.parse_datetime(at), row_id)
        rows = await info.context.profile_service.store.history_page(
            self.profile.id, key, first=first + 1, after=position
        )
        edges = [
            TraitObservationEdge(
                cursor=encode_cursor(row.observation.observed_at.isoformat(), row.id),
                node=TraitObservation(
                    value=to_json(row.observation.value),
                    observed_at=row.observation.observed_at,
                    source=row.observation.source,
                    origin=row.observation.origin,
                    recorded_at=row.recorded_at,
                ),
            )
            for row in rows[:first]
        ]
        return TraitHistoryConnection(
            edges=edges,
            page_info=PageInfo.of(edges, more=len(rows) > first),
        )

    @strawberry.field(description="Recent activity, newest first; `name` filters by event name.")
    async def events(
        self,
        info: Info[ProfileReadContext, None],
        first: int = 20,
        after: str | None = None,
        name: str | None = None,
    ) -> EventConnection:
        if not 1 <= first <= MAX_HISTORY_PAGE:
            raise InvalidPageSize(f"first must be between 1 and {MAX_HISTORY_PAGE}")
        position = None
        if after is not None:
            at, event_id = decode_cursor(after, parts=2)
            position = (trait_rules.parse_datetime(at), event_id)
        docs = await info.context.recent_events(
            self.profile.id, first=first + 1, before=position, name=name
        )
        edges = [
            EventEdge(
                cursor=encode_cursor(doc["timestamp"].isoformat(), doc["_id"]),
                node=EventType(
                    id=strawberry.ID(doc["_id"]),
                    type=doc["type"],
                    name=doc.get("event") or doc.get("name"),
                    timestamp=doc["timestamp"],
                    received_at=doc["received_at"],
                    source=doc["source"],
                    properties=as_json(doc.get("properties") or {}),
                ),
            )
            for doc in docs[:first]
        ]
        return EventConnection(
            edges=edges,
            page_info=PageInfo.of(edges, more=len(docs) > first),
        )

    @strawberry.field(description="Activity statistics: first and last seen, counts.")
    def stats(self) -> JSON:
        return as_json(readable_stats(self.profile.stats))

    @strawberry.field(description="Computed scores, such as RFM.")
    def computed(self) -> JSON:
        return as_json(self.profile.computed)

    @strawberry.field(description="Ids of the segments this profile belongs to now.")
    def segments(self) -> list[str]:
        return self.profile.segments

    @strawberry.field(
        description="This profile's entries into and exits from segments, newest first."
    )
    async def segment_history(
        self, info: Info[Any, None], first: int = 20, after: str | None = None
    ) -> Annotated["SegmentLogConnection", strawberry.lazy("profiles.segments.graphql")]:
        from profiles.segments.graphql import log_page

        return await log_page(
            info.context.segments, profile_id=self.profile.id, first=first, after=after
        )

    @strawberry.field(
        description="This profile's arm in an experiment, or `holdout`: a stable hash of the "
        "experiment and the profile id, so it never changes and needs no storage."
    )
    def variant(self, experiment: str, arms: list[str] | None = None, holdout: float = 0.0) -> str:
        return experiments.variant(
            self.profile.id, experiment, arms=arms or ("control", "treatment"), holdout=holdout
        )

    @strawberry.field(description="Consent per purpose.")
    def consent(self) -> JSON:
        return as_json(self.profile.consent)


class InvalidPageSize(KindredError):
    """A page size is out of bounds."""

    code = "invalid_page_size"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


@strawberry.type(description="No profile has that id or identifier.")
class ProfileNotFound:
    message: str


@strawberry.type(description="An argument was unusable; `field` names it.")
class InvalidInput:
    field: str
    message: str


ProfileResult = Annotated[
    ProfileType | ProfileNotFound | InvalidInput, strawberry.union("ProfileResult")
]


@strawberry.input(description="An identifier to look a profile up by, e.g. email.")
class IdentityInput:
    kind: str
    value: str


@strawberry.type
class ProfileEdge:
    cursor: str
    node: ProfileType


@strawberry.type
class ProfileConnection:
    edges: list[ProfileEdge]
    page_info: PageInfo


@strawberry.input(description="Narrows a profile listing.")
class ProfileFilter:
    segment: str | None = None
    has_trait: str | None = None


TraitTypeEnum = strawberry.enum(TraitType, name="TraitType")


@strawberry.type(name="TraitDefinition", description="A declared trait in the catalog.")
class TraitDefinitionType:
    key: str
    type: TraitTypeEnum  # type: ignore[valid-type]
    description: str
    pii: bool
    precedence: list[str] | None

    @classmethod
    def of(cls, d: TraitDefinition) -> "TraitDefinitionType":
        return cls(
            key=d.key,
            type=d.type,
            description=d.description,
            pii=d.pii,
            precedence=list(d.precedence) if d.precedence else None,
        )


@strawberry.input(description="A trait declaration: type, meaning, PII flag, precedence.")
class TraitDefinitionInput:
    key: str
    type: TraitTypeEnum  # type: ignore[valid-type]
    description: str = ""
    pii: bool = False
    precedence: list[str] | None = None

    def to_definition(self) -> TraitDefinition:
        return TraitDefinition(
            key=self.key,
            type=TraitType(self.type),
            description=self.description,
            pii=self.pii,
            precedence=tuple(self.precedence) if self.precedence else None,
        )


DefineTraitResult = Annotated[
    TraitDefinitionType | InvalidInput, strawberry.union("DefineTraitResult")
]
