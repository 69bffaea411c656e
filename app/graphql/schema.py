"""The GraphQL schema: one root assembled from the domain packages' types."""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from enum import Enum
from http import HTTPStatus
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from pymongo.errors import PyMongoError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.fastapi import GraphQLRouter
from strawberry.permission import BasePermission
from strawberry.schema.config import StrawberryConfig
from strawberry.types import Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, Selection

from app import __version__
from app.auth import Scope
from app.graphql.context import Context, get_context
from app.ingest.models import QuarantinedEvent as QuarantinedEventRow
from app.ingest.service import ReplaySummary
from app.settings import Environment, Settings
from identity.errors import InvalidIdentifier
from identity.graphql import (
    AuditActionType,
    AuditConnection,
    AuditEdge,
    AuditEntry,
    Merged,
    MergeRefused,
    MergeResult,
    MergeSuggestion,
    MergeSuggestionConnection,
    MergeSuggestionEdge,
    MergeType,
    RejectSuggestionResult,
    SharedIdentifier,
    SuggestionRejected,
    SuggestionStatusType,
    Unmerged,
    UnmergeResult,
    ValidationCount,
)
from identity.merge import Actor, MergeRecord
from identity.normalize import identity_key
from identity.service import AuditAction
from identity.service import MergeRefused as MergeRefusedError
from identity.store import Suggestion, SuggestionStatus
from profiles import traits as trait_rules
from profiles.errors import KindredError
from profiles.errors import ProfileNotFound as ProfileNotFoundError
from profiles.graphql import (
    DefineTraitResult,
    IdentityInput,
    InvalidInput,
    InvalidPageSize,
    PageInfo,
    ProfileConnection,
    ProfileEdge,
    ProfileFilter,
    ProfileNotFound,
    ProfileResult,
    ProfileType,
    TraitDefinitionInput,
    TraitDefinitionType,
    decode_cursor,
    encode_cursor,
)
from profiles.models import Profile
from profiles.scores import graphql as scores_graphql
from profiles.scores.store import ScoreStore
from profiles.segments.graphql import (
    SegmentConflict,
    SegmentInput,
    SegmentNotFound,
    SegmentType,
    definition_of,
)
from profiles.segments.service import SegmentConflict as SegmentConflictError
from profiles.segments.service import SegmentNotFound as SegmentNotFoundError
from profiles.service import MAX_MERGE_CHAIN, utcnow
from profiles.webhooks import graphql as webhook_graphql


def needs(scope: Scope) -> type[BasePermission]:
    """Returns a permission class that admits keys holding `scope` (admin holds all)."""

    class HasScope(BasePermission):
        message = f"this API key lacks the {scope.value} scope"
        error_extensions = {"code": "forbidden"}

        def has_permission(self, source: Any, info: Info[Context, None], **kwargs: Any) -> bool:
            key = info.context.api_key
            return key is not None and key.allows(scope)

    HasScope.__name__ = f"Has_{scope.name}"
    return HasScope


READ = [needs(Scope.PROFILES_READ)]
ADMIN = [needs(Scope.ADMIN)]


@strawberry.enum
class DatabaseStatus(Enum):
    """Whether the database answers."""

    OK = "ok"
    UNREACHABLE = "unreachable"


@strawberry.type
class Health:
    """The service's readiness, as `/readyz` reports it."""

    ready: bool
    database: DatabaseStatus


@strawberry.type(description="A rejected event kept for review and replay.")
class QuarantinedEvent:
    id: strawberry.ID
    source: str
    received_at: datetime
    reason: str
    message_id: str | None
    raw: str = strawberry.field(description="The event as received, as a JSON string.")
    replayed_at: datetime | None = strawberry.field(
        description="When a replay last found it still invalid; null if never replayed."
    )

    @classmethod
    def of(cls, row: QuarantinedEventRow) -> "QuarantinedEvent":
        return cls(
            id=strawberry.ID(row.id),
            source=row.source,
            received_at=row.received_at,
            reason=row.reason,
            message_id=row.message_id,
            raw=row.raw,
            replayed_at=row.replayed_at,
        )


@strawberry.type
class QuarantineEdge:
    cursor: str
    node: QuarantinedEvent


@strawberry.type
class QuarantineConnection:
    edges: list[QuarantineEdge]
    page_info: PageInfo


@strawberry.type(description="What a quarantine replay did.")
class ReplayResult:
    stored: int = strawberry.field(description="Events now in the event log.")
    duplicates: int = strawberry.field(description="Events whose messageId was stored already.")
    still_invalid: int = strawberry.field(description="Events kept, with their new reason.")
    not_found: int = strawberry.field(description="Ids that are not in quarantine.")
    replayed: int = strawberry.field(description="Quarantined events looked at.")

    @classmethod
    def of(cls, summary: ReplaySummary) -> "ReplayResult":
        return cls(
            stored=summary.stored,
            duplicates=summary.duplicates,
            still_invalid=summary.still_invalid,
            not_found=summary.not_found,
            replayed=summary.replayed,
        )


async def _follow_merges(
    context: Context, start: Profile | str, keys: tuple[str, ...] | None
) -> Profile | None:
    # Old ids keep working after a merge: follow `merged_into` to the survivor.
    profile = await context.profile_by_id.load((start, keys)) if isinstance(start, str) else start
    for _ in range(MAX_MERGE_CHAIN):
        if profile is None or profile.merged_into is None:
            return profile
        profile = await context.profile_by_id.load((profile.merged_into, keys))
    return profile


def _selected_trait_keys(
    info: Info[Context, None], profile_path: tuple[str, ...]
) -> tuple[str, ...] | None:
    """Returns the trait keys a query reads from profiles at `profile_path`, or None for all.

    `traits(keys:)` and `trait(key:)` name their keys; `traits` without keys needs them all.
    """
    keys: list[str] = []

    def walk(selections: list[Selection], path: tuple[str, ...]) -> bool:
        for selection in selections:
            if isinstance(selection, InlineFragment | FragmentSpread):
                if not walk(selection.selections, path):
                    return False
                continue
            here = (*path, selection.name)
            if path == profile_path:
                if selection.name == "traits":
                    wanted = selection.arguments.get("keys")
                    if wanted is None:
                        return False
                    keys.extend(wanted)
                elif selection.name == "trait":
                    keys.append(selection.arguments["key"])
            elif profile_path[: len(here)] == here and not walk(selection.selections, here):
                return False
        return True

    if not walk(info.selected_fields[0].selections, ()):
        return None
    return tuple(sorted({trait_rules.check_key(k) for k in keys}))


@strawberry.type
class Query:
    """Read access for templates, scripts and the admin console."""

    webhooks = strawberry.field(
        resolver=webhook_graphql.webhooks,
        permission_classes=ADMIN,
        description="Webhooks on a segment's enter/exit (or all), oldest first; never secrets.",
    )
    webhook_deliveries = strawberry.field(
        resolver=webhook_graphql.webhook_deliveries,
        permission_classes=ADMIN,
        description="Webhook deliveries newest first, of one status or all (Relay-style cursors).",
    )

    @strawberry.field(description="The running Kindred version.")
    def version(self) -> str:
        return __version__

    @strawberry.field(description="Whether the service and its database are ready.")
    async def health(self, info: Info[Context, None]) -> Health:
        state = info.context.state
        try:
            await asyncio.wait_for(state.db.command("ping"), timeout=2)
            database = DatabaseStatus.OK
        except (PyMongoError, TimeoutError):
            database = DatabaseStatus.UNREACHABLE
        return Health(ready=state.ready.is_set(), database=database)

    @strawberry.field(
        permission_classes=READ,
        description="One profile by id or by identifier; `asOf` rebuilds it as known then.",
    )
    async def profile(
        self,
        info: Info[Context, None],
        id: strawberry.ID | None = None,
        identity: IdentityInput | None = None,
        as_of: datetime | None = None,
    ) -> ProfileResult:
        context = info.context
        if (id is None) == (identity is None):
            return InvalidInput(field="id", message="give exactly one of `id` or `identity`")
        # A point-in-time read rebuilds traits from history, so it reads none here.
        keys = () if as_of is not None else _selected_trait_keys(info, ())
        if identity is not None:
            try:
                key = identity_key(identity.kind, identity.value)
            except InvalidIdentifier as exc:
                return InvalidInput(field="identity", message=exc.message)
            found = await context.profile_by_identity.load((key, keys))
            if found is None:
                return ProfileNotFound(message=f"no profile has that {identity.kind}")
            profile = await _follow_merges(context, found, keys)
        else:
            profile = await _follow_merges(context, str(id), keys)
        if profile is None:
            return ProfileNotFound(message=f"no profile with id {str(id)!r}")
        if as_of is not None:
            try:
                profile = await context.profile_service.profile_as_of(profile.id, as_of)
            except ProfileNotFoundError as exc:
                return ProfileNotFound(message=exc.message)
        return ProfileType.of(profile)

    @strawberry.field(
        permission_classes=READ,
        description="Live profiles in id order, a page at a time (Relay-style cursors).",
    )
    async def profiles(
        self,
        info: Info[Context, None],
        filter: ProfileFilter | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> ProfileConnection:
        limit = info.context.state.settings.graphql_max_page
        if not 1 <= first <= limit:
            raise InvalidPageSize(f"first must be between 1 and {limit}")
        after_id = decode_cursor(after, parts=1)[0] if after is not None else None
        has_trait = filter.has_trait if filter else None
        if has_trait is not None:
            trait_rules.check_key(has_trait)
        found, more = await info.context.profile_service.store.page(
            first=first,
            after=after_id,
            segment=filter.segment if filter else None,
            has_trait=has_trait,
            trait_keys=_selected_trait_keys(info, ("edges", "node")),
        )
        edges = [ProfileEdge(cursor=encode_cursor(p.id), node=ProfileType.of(p)) for p in found]
        return ProfileConnection(
            edges=edges,
            page_info=PageInfo.of(edges, more=more),
        )

    @strawberry.field(permission_classes=READ, description="The declared traits.")
    async def trait_catalog(self, info: Info[Context, None]) -> list[TraitDefinitionType]:
        entries = await info.context.profile_service.store.catalog_entries()
        return [TraitDefinitionType.of(d) for d in entries.values()]

    @strawberry.field(
        permission_classes=ADMIN,
        description="Quarantined events, oldest first, a page at a time (Relay-style cursors).",
    )
    async def quarantine(
        self, info: Info[Context, None], first: int = 50, after: str | None = None
    ) -> QuarantineConnection:
        limit = info.context.state.settings.graphql_max_page
        if not 1 <= first <= limit:
            raise InvalidPageSize(f"first must be between 1 and {limit}")
        after_id = decode_cursor(after, parts=1)[0] if after is not None else None
        # One more than asked tells whether another page follows.
        rows = await info.context.state.ingest.quarantined(limit=first + 1, after=after_id)
        edges = [
            QuarantineEdge(cursor=encode_cursor(row.id), node=QuarantinedEvent.of(row))
            for row in rows[:first]
        ]
        return QuarantineConnection(
            edges=edges,
            page_info=PageInfo.of(edges, more=len(rows) > first),
        )

    @strawberry.field(
        permission_classes=ADMIN,
        description="Live profiles counted by the validation status of their email and phone.",
    )
    async def validation_report(self, info: Info[Context, None]) -> list[ValidationCount]:
        rows = await info.context.state.identity.validation_report()
        return [ValidationCount.of(row) for row in rows]

    @strawberry.field(
        permission_classes=ADMIN,
        description="Identifiers that stopped linking because too many people used them.",
    )
    async def shared_identifiers(
        self, info: Info[Context, None], first: int = 50
    ) -> list[SharedIdentifier]:
        limit = info.context.state.settings.graphql_max_page
        if not 1 <= first <= limit:
            raise InvalidPageSize(f"first must be between 1 and {limit}")
        found = await info.context.state.identity.shared_identifiers(first=first)
        return [SharedIdentifier.of(item) for item in found]

    @strawberry.field(
        permission_classes=ADMIN,
        description="The review queue of look-alike profiles, best score first, with the "
        "evidence per field (Relay-style cursors).",
    )
    async def merge_suggestions(
        self,
        info: Info[Context, None],
        status: SuggestionStatusType = SuggestionStatus.OPEN,  # type: ignore[valid-type]
        min_score: float = 0.0,
        first: int = 50,
        after: str | None = None,
    ) -> MergeSuggestionConnection:
        limit = info.context.state.settings.graphql_max_page
        if not 1 <= first <= limit:
            raise InvalidPageSize(f"first must be between 1 and {limit}")
        if not 0 <= min_score <= 1:
            raise InvalidScore("minScore must be between 0 and 1")
        after_rank = decode_cursor(after, parts=1)[0] if after is not None else None
        found, more = await info.context.state.suggestions.page(
            status=SuggestionStatus(status), min_score=min_score, first=first, after=after_rank
        )
        nodes = await _suggestion_nodes(info.context, found)
        edges = [
            MergeSuggestionEdge(cursor=encode_cursor(item.rank), node=node)
            for item, node in zip(found, nodes, strict=True)
        ]
        return MergeSuggestionConnection(edges=edges, page_info=PageInfo.of(edges, more=more))

    @strawberry.field(
        permission_classes=ADMIN,
        description="The merges a profile took part in, either side, newest first; with what "
        "each moved and, if undone, who undid it and why.",
    )
    async def merges(self, info: Info[Context, None], profile_id: strawberry.ID) -> list[MergeType]:
        found = await info.context.state.merges.merges_of(str(profile_id))
        return [MergeType.of(record) for record in found]

    @strawberry.field(
        permission_classes=ADMIN,
        description="What admins did (merges, undos, review decisions, refusals too), newest "
        "first (Relay-style cursors).",
    )
    async def admin_audit(
        self,
        info: Info[Context, None],
        first: int = 50,
        after: str | None = None,
        action: AuditActionType | None = None,  # type: ignore[valid-type]
    ) -> AuditConnection:
        limit = info.context.state.settings.graphql_max_page
        if not 1 <= first <= limit:
            raise InvalidPageSize(f"first must be between 1 and {limit}")
        after_id = decode_cursor(after, parts=1)[0] if after is not None else None
        entries, more = await info.context.state.merges.audit(
            first=first, after=after_id, action=None if action is None else AuditAction(action)
        )
        edges = [AuditEdge(cursor=encode_cursor(e.id), node=AuditEntry.of(e)) for e in entries]
        return AuditConnection(edges=edges, page_info=PageInfo.of(edges, more=more))

    @strawberry.field(
        permission_classes=READ,
        description="Live profiles per RFM group (Champions, At Risk, …), as last computed.",
    )
    async def rfm_summary(self, info: Info[Context, None]) -> scores_graphql.RfmSummaryType:
        return await scores_graphql.rfm_summary(ScoreStore(info.context.db))

    @strawberry.field(
        permission_classes=READ,
        description="A clustering run with its clusters' sizes, centroids and descriptions: "
        "the latest, or the one `runId` names; null if there is none.",
    )
    async def clusters(
        self, info: Info[Context, None], run_id: strawberry.ID | None = None
    ) -> scores_graphql.ClusterRunType | None:
        return await scores_graphql.cluster_run(
            ScoreStore(info.context.db), None if run_id is None else str(run_id)
        )

    @strawberry.field(permission_classes=READ, description="Every segment, by id.")
    async def segments(self, info: Info[Context, None]) -> list[SegmentType]:
        return [SegmentType.of(r) for r in await info.context.segments.store.live()]

    @strawberry.field(permission_classes=READ, description="One segment; null if unknown.")
    async def segment(self, info: Info[Context, None], id: strawberry.ID) -> SegmentType | None:
        found = await info.context.segments.store.get(str(id))
        return None if found is None or found.deleted else SegmentType.of(found)


async def _suggestion_nodes(context: Context, found: Sequence[Suggestion]) -> list[MergeSuggestion]:
    """Returns the suggestions with both profiles as they are now (after merges)."""
    ids = sorted({pid for item in found for pid in item.profiles})
    profiles = dict(
        zip(
            ids,
            await asyncio.gather(*(_follow_merges(context, pid, None) for pid in ids)),
            strict=True,
        )
    )
    return [
        MergeSuggestion.of(
            item, [ProfileType.of(p) for pid in item.profiles if (p := profiles[pid])]
        )
        for item in found
    ]


SegmentResult = Annotated[SegmentType | InvalidInput, strawberry.union("SegmentResult")]
UpdateSegmentResult = Annotated[
    SegmentType | SegmentNotFound | SegmentConflict | InvalidInput,
    strawberry.union("UpdateSegmentResult"),
]


class InvalidScore(KindredError):
    """A score bound outside 0 to 1."""

    code = "invalid_score"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


@strawberry.type
class Mutation:
    """Changes for admins."""

    create_webhook = strawberry.mutation(
        resolver=webhook_graphql.create_webhook,
        permission_classes=ADMIN,
        description="Subscribes a URL to a segment's enter/exit; returns its signing secret, "
        "shown only this once.",
    )
    delete_webhook = strawberry.mutation(
        resolver=webhook_graphql.delete_webhook,
        permission_classes=ADMIN,
        description="Deletes a webhook and cancels its pending deliveries.",
    )
    resume_webhook = strawberry.mutation(
        resolver=webhook_graphql.resume_webhook,
        permission_classes=ADMIN,
        description="Makes a webhook paused by a 410 active again.",
    )
    redeliver_webhook = strawberry.mutation(
        resolver=webhook_graphql.redeliver_webhook,
        permission_classes=ADMIN,
        description="Sends a dead webhook delivery again, with a fresh count of attempts.",
    )

    @strawberry.mutation(permission_classes=ADMIN, description="Declares or updates a trait.")
    async def define_trait(
        self, info: Info[Context, None], input: TraitDefinitionInput
    ) -> DefineTraitResult:
        try:
            definition = await info.context.profile_service.define_trait(input.to_definition())
        except KindredError as exc:
            return InvalidInput(field="input", message=exc.message)
        return TraitDefinitionType.of(definition)

    @strawberry.mutation(
        permission_classes=ADMIN, description="Removes a trait's declaration; values stay."
    )
    async def remove_trait(self, info: Info[Context, None], key: str) -> bool:
        return await info.context.profile_service.store.delete_catalog_entry(
            trait_rules.check_key(key)
        )

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Validates quarantined events again (these ids, or all of them when absent); "
        "valid ones join the event log and leave quarantine.",
    )
    async def replay_quarantine(
        self, info: Info[Context, None], ids: list[strawberry.ID] | None = None
    ) -> ReplayResult:
        wanted = None if ids is None else [str(i) for i in ids]
        return ReplayResult.of(await info.context.state.ingest.replay(wanted))

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Merges one profile into another, losing nothing: identities, history and "
        "events move, traits and stats are recomputed; undo with `unmergeProfiles`.",
    )
    async def merge_profiles(
        self,
        info: Info[Context, None],
        survivor_id: strawberry.ID,
        merged_id: strawberry.ID,
        reason: str,
    ) -> MergeResult:
        merges = info.context.state.merges
        return await _merged(
            info.context,
            lambda actor: merges.merge(
                survivor_id=str(survivor_id), merged_id=str(merged_id), actor=actor, reason=reason
            ),
        )

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Merges the two profiles of an open suggestion; the survivor is the one with "
        "a user id, else the older.",
    )
    async def accept_suggestion(self, info: Info[Context, None], id: strawberry.ID) -> MergeResult:
        merges = info.context.state.merges
        return await _merged(
            info.context, lambda actor: merges.accept_suggestion(str(id), actor=actor)
        )

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Undoes a merge: both profiles as if never merged, events since then on the "
        "side their identifiers point to; the pair is never merged automatically again.",
    )
    async def unmerge_profiles(
        self, info: Info[Context, None], merge_id: strawberry.ID, reason: str
    ) -> UnmergeResult:
        context = info.context
        try:
            record = await context.state.merges.unmerge(
                str(merge_id), actor=_admin(context), reason=reason
            )
        except ValueError as exc:
            return InvalidInput(field="reason", message=str(exc))
        except MergeRefusedError as refused:
            return MergeRefused.of(refused)
        pids = (record.merged, record.survivor)
        found = [await _follow_merges(context, pid, None) for pid in pids]
        return Unmerged(
            merge=MergeType.of(record), profiles=[ProfileType.of(p) for p in found if p]
        )

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Marks a suggestion's two profiles as not the same person: never suggested "
        "or merged automatically again.",
    )
    async def reject_suggestion(
        self, info: Info[Context, None], id: strawberry.ID, reason: str
    ) -> RejectSuggestionResult:
        context = info.context
        try:
            rejected = await context.state.merges.reject_suggestion(
                str(id), actor=_admin(context), reason=reason
            )
        except ValueError as exc:
            return InvalidInput(field="reason", message=str(exc))
        except MergeRefusedError as refused:
            return MergeRefused.of(refused)
        [node] = await _suggestion_nodes(context, [rejected])
        return SuggestionRejected(suggestion=node)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Creates a segment (version 1) and evaluates it over every profile.",
    )
    async def create_segment(self, info: Info[Context, None], input: SegmentInput) -> SegmentResult:
        try:
            record = await info.context.segments.create(
                name=input.name,
                definition=definition_of(input.definition),
                description=input.description,
                actor=_admin_name(info.context),
                now=utcnow(),
            )
        except (KindredError, ValueError) as exc:
            return _segment_input_error(exc)
        return SegmentType.of(await info.context.segments.get(record.id))

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Stores a new version of a segment's definition and re-evaluates it; "
        "`expectedVersion` refuses the change if someone else changed it first.",
    )
    async def update_segment(
        self,
        info: Info[Context, None],
        id: strawberry.ID,
        input: SegmentInput,
        expected_version: int | None = None,
    ) -> UpdateSegmentResult:
        service = info.context.segments
        try:
            await service.update(
                str(id),
                name=input.name,
                definition=definition_of(input.definition),
                description=input.description,
                expected_version=expected_version,
                actor=_admin_name(info.context),
                now=utcnow(),
            )
        except SegmentNotFoundError as exc:
            return SegmentNotFound(message=exc.message)
        except SegmentConflictError as exc:
            current = await service.get(str(id))
            return SegmentConflict(message=exc.message, version=current.version)
        except (KindredError, ValueError) as exc:
            return _segment_input_error(exc)
        return SegmentType.of(await service.get(str(id)))

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Deletes a segment: its members exit (logged); its log and versions stay.",
    )
    async def delete_segment(self, info: Info[Context, None], id: strawberry.ID) -> bool:
        try:
            return await info.context.segments.delete(str(id), now=utcnow())
        except SegmentNotFoundError:
            return False


def _admin_name(context: Context) -> str:
    key = context.api_key
    assert key is not None  # the ADMIN permission let the request in
    return f"admin:{key.id}"


def _segment_input_error(exc: Exception) -> InvalidInput:
    message = exc.message if isinstance(exc, KindredError) else str(exc)
    field = "input.name" if message.startswith("name") else "input.definition"
    return InvalidInput(field=field, message=message)


def _admin(context: Context) -> Actor:
    key = context.api_key
    assert key is not None  # the ADMIN permission let the request in
    return Actor.admin(key.id, key.name)


async def _merged(
    context: Context, merge: Callable[[Actor], Awaitable[MergeRecord]]
) -> MergeResult:
    """Runs a merge for the caller's admin key; returns the typed outcome."""
    try:
        record = await merge(_admin(context))
    except ValueError as exc:
        return InvalidInput(field="reason", message=str(exc))
    except MergeRefusedError as refused:
        return MergeRefused.of(refused)
    survivor = await _follow_merges(context, record.survivor, None)
    assert survivor is not None  # it was merged into, in the same transaction
    return Merged(merge=MergeType.of(record), profile=ProfileType.of(survivor))


class KindredErrorCodes(SchemaExtension):
    """Adds `extensions.code` to errors that Kindred raised on purpose."""

    def on_operation(self) -> Any:
        yield
        result = self.execution_context.result
        for error in getattr(result, "errors", None) or []:
            original = error.original_error
            if isinstance(original, KindredError):
                error.extensions = {**(error.extensions or {}), "code": original.code}


def _should_mask(error: GraphQLError) -> bool:
    # Expected failures carry a message meant for the caller; anything else is a bug.
    original = error.original_error
    return original is not None and not isinstance(original, KindredError)


def build_schema(settings: Settings) -> strawberry.Schema:
    """Returns the schema with the limits and the environment's extensions."""
    # Built once: the validation cache is keyed by the rule classes, and these
    # limiters make a new class each time they are constructed.
    limits = [
        *QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases).validation_rules,
    ]
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = [
        # Templates send the same few queries over and over: parse and validate each once.
        lambda: ParserCache(maxsize=256),
        lambda: ValidationCache(maxsize=256),
        KindredErrorCodes,
        lambda: AddValidationRules(limits),
        lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
    ]
    prod = settings.env is Environment.PROD
    if prod:
        extensions.append(DisableIntrospection)
        extensions.append(lambda: MaskErrors(should_mask_error=_should_mask))
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        extensions=extensions,
        config=StrawberryConfig(auto_camel_case=True, disable_field_suggestions=prod),
    )


def build_router(settings: Settings) -> GraphQLRouter[Context, None]:
    """Returns the `/graphql` router; the IDE is served in dev only."""
    return GraphQLRouter(
        build_schema(settings),
        context_getter=get_context,
        graphql_ide="graphiql" if settings.env is Environment.DEV else None,
        # Queries over GET could be triggered cross-site; POST only, so a
        # mutation can never ride on a link.
        allow_queries_via_get=False,
    )
