"""Identity reports and admin operations, across the identity graph and the profiles."""

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Protocol

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from identity import graph
from identity import merge as merge_rules
from identity.events import STATUS_TRAITS, IdentityRules, identity_keys
from identity.store import (
    AuditLog,
    IdentityStore,
    MergeLedger,
    Suggestion,
    SuggestionStatus,
    SuggestionStore,
    separated,
    suggestion_id,
)
from profiles import stats as activity
from profiles.errors import KindredError, ProfileNotFound
from profiles.ids import new_id
from profiles.models import Identifier
from profiles.service import MAX_MERGE_CHAIN, ProfileService, utcnow
from profiles.store import ProfileStore

log = logging.getLogger(__name__)


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


class MergeRefused(KindredError):
    """A merge, unmerge or review decision that a rule forbids; `rule` names it."""

    code = "merge_refused"
    status = HTTPStatus.CONFLICT

    def __init__(self, rule: merge_rules.Rule, detail: str | None = None) -> None:
        super().__init__(detail or merge_rules.RULE_MESSAGES[rule])
        self.rule = rule


class AuditAction(StrEnum):
    """What an admin did."""

    MERGE = "merge"
    UNMERGE = "unmerge"
    ACCEPT_SUGGESTION = "accept_suggestion"
    REJECT_SUGGESTION = "reject_suggestion"


@dataclass(frozen=True)
class AuditEntry:
    """One admin action, as the audit log keeps it."""

    id: str
    at: datetime
    actor: merge_rules.Actor
    action: AuditAction
    target: str  # the merge or suggestion acted on
    profiles: tuple[str, ...]
    reason: str
    outcome: str  # `done`, or `refused:<rule>`


ProfilesChanged = Callable[[Sequence[str]], Awaitable[None]]


class MergeEvents(Protocol):
    """What merging needs of the event log (`app.eventlog.EventLog` provides it)."""

    async def move(self, from_profile: str, to_profile: str, *, session: AsyncClientSession) -> int:
        """Moves a merged-away profile's events to its survivor."""
        ...

    async def give_back(self, merged: str, *, holder: str, session: AsyncClientSession) -> int:
        """Gives an unmerged profile back the events it brought."""
        ...

    async def applied_since(
        self, profile_id: str, since: datetime, *, session: AsyncClientSession
    ) -> list[dict[str, Any]]:
        """Returns a profile's events applied at or after an instant."""
        ...

    async def reassign(
        self, event_ids: Sequence[str], *, to_profile: str, session: AsyncClientSession
    ) -> int:
        """Moves applied events to another profile."""
        ...

    async def applied_to(
        self, profile_id: str, *, session: AsyncClientSession | None = None
    ) -> list[dict[str, Any]]:
        """Returns every applied event of a profile."""
        ...


def _identifier(key: str) -> Identifier:
    kind, _, value = key.partition(":")
    return Identifier(kind, value)


def _refused(rule: merge_rules.Rule, detail: str | None = None) -> MergeRefused:
    return MergeRefused(rule, detail)


class MergeService:
    """Merges and unmerges profiles losslessly, in one transaction each, and keeps the ledger.

    Every row a merge moves (identities, trait history, events) records the
    profile it came from in `merged_from`, so an unmerge gives back exactly
    that, and splits what arrived since by the identifiers each event carried.
    """

    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        *,
        profiles: ProfileService,
        identities: IdentityStore,
        suggestions: SuggestionStore,
        ledger: MergeLedger,
        audit_log: AuditLog,
        events: MergeEvents,
        rules: IdentityRules | None = None,
        changed: ProfilesChanged | None = None,
    ) -> None:
        self.client = client
        # Told of the profiles a merge or unmerge changed, once it committed (to
        # re-evaluate their segments); the builder passes none, it does that itself.
        self.changed = changed
        self.profiles = profiles
        self.store = profiles.store
        self.identities = identities
        self.suggestions = suggestions
        self.ledger = ledger
        self.audit_log = audit_log
        self.events = events
        self.rules = rules or IdentityRules()

    @classmethod
    def on(
        cls,
        db: AsyncDatabase[dict[str, Any]],
        *,
        profiles: ProfileService,
        events: MergeEvents,
        rules: IdentityRules | None = None,
        changed: ProfilesChanged | None = None,
    ) -> "MergeService":
        """Returns the merge service on a database, with its stores."""
        return cls(
            db.client,
            profiles=profiles,
            identities=IdentityStore(db),
            suggestions=SuggestionStore(db),
            ledger=MergeLedger(db),
            audit_log=AuditLog(db),
            events=events,
            rules=rules,
            changed=changed,
        )

    async def merge(
        self,
        *,
        survivor_id: str,
        merged_id: str,
        actor: merge_rules.Actor,
        reason: str,
        score: float | None = None,
        evidence: Sequence[Mapping[str, Any]] = (),
        cause: Mapping[str, Any] | None = None,
    ) -> merge_rules.MergeRecord:
        """Merges one profile into a named survivor; raises `MergeRefused` naming the rule.

        Merging a profile into the survivor it was merged into already returns
        that merge again: the call is idempotent.
        """
        return await self._merge(
            survivor_id,
            merged_id,
            actor=actor,
            reason=reason,
            score=score,
            evidence=evidence,
            cause=cause or {},
            action=AuditAction.MERGE,
            target=None,
        )

    async def merge_pair(
        self,
        a: str,
        b: str,
        *,
        actor: merge_rules.Actor,
        reason: str,
        score: float | None = None,
        evidence: Sequence[Mapping[str, Any]] = (),
        cause: Mapping[str, Any] | None = None,
    ) -> merge_rules.MergeRecord:
        """Merges two profiles, the survivor chosen by the rule (user id, else the oldest)."""
        survivor, merged = await self.survivor_of(a, b)
        return await self.merge(
            survivor_id=survivor,
            merged_id=merged,
            actor=actor,
            reason=reason,
            score=score,
            evidence=evidence,
            cause=cause,
        )

    async def survivor_of(self, a: str, b: str) -> tuple[str, str]:
        """Returns (survivor, merged) for two profiles by the documented rule."""
        held = await self.identities.held_keys({a, b}, kinds=self.rules.limits.per_kind)
        keys = {pid: set(held.get(pid, ())) for pid in (a, b)}
        first, second = sorted((a, b), key=lambda p: graph.survivor_rank(p, keys))
        return first, second

    async def _merge(
        self,
        survivor: str,
        merged: str,
        *,
        actor: merge_rules.Actor,
        reason: str,
        score: float | None,
        evidence: Sequence[Mapping[str, Any]],
        cause: Mapping[str, Any],
        action: AuditAction,
        target: str | None,
    ) -> merge_rules.MergeRecord:
        by_admin = actor.kind is merge_rules.ActorKind.ADMIN
        reason = merge_rules.checked_reason(reason, required=by_admin)

        async def work(session: AsyncClientSession) -> merge_rules.MergeRecord:
            return await self._merge_in(
                session,
                survivor,
                merged,
                actor=actor,
                reason=reason,
                score=score,
                evidence=evidence,
                cause=cause,
            )

        record = await self._audited(
            work,
            actor=actor,
            action=action,
            target=target,
            profiles=(survivor, merged),
            reason=reason,
        )
        log.info(
            "profiles merged",
            extra={"survivor": survivor, "merged": merged, "actor": actor.describe()},
        )
        await self._tell_changed([record.survivor])
        return record

    async def _audited(
        self,
        work: Callable[[AsyncClientSession], Awaitable[merge_rules.MergeRecord]],
        *,
        actor: merge_rules.Actor,
        action: AuditAction,
        target: str | None,
        profiles: Sequence[str],
        reason: str,
    ) -> merge_rules.MergeRecord:
        """Runs a merge or unmerge in one transaction; an admin's is audited, refusals too.

        The audit row of a done action commits with it; a refusal's is written alone.
        """
        by_admin = actor.kind is merge_rules.ActorKind.ADMIN

        async def body(session: AsyncClientSession) -> merge_rules.MergeRecord:
            record = await work(session)
            if by_admin:
                await self._audit(
                    actor,
                    action,
                    target=target or record.id,
                    profiles=(record.survivor, record.merged),
                    reason=reason,
                    outcome="done",
                    session=session,
                )
            return record

        async with (
            self._refusals_audited(
                actor,
                action,
                target=target or "<-".join(profiles),
                profiles=profiles,
                reason=reason,
            ),
            self.client.start_session() as session,
        ):
            return await session.with_transaction(body)

    @contextlib.asynccontextmanager
    async def _refusals_audited(
        self,
        actor: merge_rules.Actor,
        action: AuditAction,
        *,
        target: str,
        profiles: Sequence[str],
        reason: str,
    ) -> AsyncIterator[None]:
        """Audits an admin's refused action, then lets the refusal through."""
        try:
            yield
        except MergeRefused as refused:
            if actor.kind is merge_rules.ActorKind.ADMIN:
                await self._audit(
                    actor,
                    action,
                    target=target,
                    profiles=profiles,
                    reason=reason,
                    outcome=f"refused:{refused.rule.value}",
                    session=None,
                )
            raise

    async def _merge_in(
        self,
        session: AsyncClientSession,
        survivor: str,
        merged: str,
        *,
        actor: merge_rules.Actor,
        reason: str,
        score: float | None,
        evidence: Sequence[Mapping[str, Any]],
        cause: Mapping[str, Any],
    ) -> merge_rules.MergeRecord:
        if survivor == merged:
            raise _refused(merge_rules.Rule.SAME_PROFILE)
        sides = await self.store.merge_sides((survivor, merged), session=session)
        for pid in (survivor, merged):
            if pid not in sides:
                raise _refused(merge_rules.Rule.PROFILE_NOT_FOUND, f"no profile has id {pid!r}")
        if sides[merged].get("merged_into") == survivor:
            standing = await self.ledger.done(survivor=survivor, merged=merged, session=session)
            if standing is not None:
                return standing
        for pid in (survivor, merged):
            if sides[pid].get("merged_into"):
                raise _refused(
                    merge_rules.Rule.ALREADY_MERGED,
                    f"profile {pid} was merged into {sides[pid]['merged_into']}; "
                    "merge its survivor instead",
                )
        held = await self.identities.held_keys(
            (survivor, merged), kinds=self.rules.limits.per_kind, session=session
        )
        apart = await separated(self.store, (survivor, merged), session=session)
        rule = merge_rules.refusal(
            held.get(survivor, frozenset()),
            held.get(merged, frozenset()),
            limits=self.rules.limits,
            apart=bool(apart),
            by_admin=actor.kind is merge_rules.ActorKind.ADMIN,
        )
        if rule is not None:
            raise _refused(rule)

        now = utcnow()
        if not await self.store.tombstone(merged, survivor, now=now, session=session):
            raise _refused(merge_rules.Rule.ALREADY_MERGED)
        moved = merge_rules.Moved(
            identities=await self.identities.move_keys(merged, survivor, session=session),
            observations=await self.store.move_history(merged, survivor, session=session),
            events=await self.events.move(merged, survivor, session=session),
        )
        before = {pid: list(sides[pid].get("segments", ())) for pid in (survivor, merged)}
        await self.store.absorb(
            survivor,
            merged=merged,
            identifiers=sides[merged].get("identifiers", ()),
            lineage=list(sides[merged].get("absorbed", ())),
            segments=merge_rules.segments_after_merge(before[survivor], before[merged]),
            now=now,
            session=session,
        )
        await self._recompute(survivor, session=session)
        record = merge_rules.MergeRecord(
            id=new_id("mrg"),
            survivor=survivor,
            merged=merged,
            actor=actor,
            reason=reason,
            merged_at=now,
            status=merge_rules.MergeStatus.DONE,
            score=score,
            evidence=tuple(evidence),
            cause=cause,
            moved=moved,
            segments_before=before,
        )
        await self.ledger.record(record, session=session)
        await self.suggestions.decide(
            suggestion_id(survivor, merged),
            SuggestionStatus.MERGED,
            note=f"merged by {actor.describe()}",
            now=now,
            session=session,
        )
        return record

    async def _tell_changed(self, profile_ids: Sequence[str]) -> None:
        if self.changed is None:
            return
        try:
            await self.changed(profile_ids)
        except Exception:
            # The merge is committed; what follows from it catches up later.
            log.exception("after a merge: updating what depends on the profiles failed")

    async def _recompute(self, profile_id: str, *, session: AsyncClientSession) -> None:
        """Rebuilds a profile's traits from its history and its stats from its events."""
        await self.profiles.rebuild_traits(profile_id, session=session)
        events = await self.events.applied_to(profile_id, session=session)
        totals = activity.totals(activity.activity_of(e) for e in events)
        await self.store.set_stats(profile_id, totals, session=session)

    async def unmerge(
        self, merge_id: str, *, actor: merge_rules.Actor, reason: str
    ) -> merge_rules.MergeRecord:
        """Undoes a merge: both profiles as if never merged, and marked not the same person.

        Events that arrived after the merge go to the side their identifiers
        point to; both sides' traits and stats are recomputed from what they
        hold then. Later merges of the survivor stay.
        """
        reason = merge_rules.checked_reason(reason, required=True)

        async def work(session: AsyncClientSession) -> merge_rules.MergeRecord:
            return await self._unmerge_in(session, merge_id, actor=actor, reason=reason)

        record = await self._audited(
            work,
            actor=actor,
            action=AuditAction.UNMERGE,
            target=merge_id,
            profiles=(),
            reason=reason,
        )
        await self._tell_changed([record.merged, record.survivor])
        log.info(
            "merge undone",
            extra={"merge": merge_id, "survivor": record.survivor, "merged": record.merged},
        )
        return record

    async def _unmerge_in(
        self,
        session: AsyncClientSession,
        merge_id: str,
        *,
        actor: merge_rules.Actor,
        reason: str,
    ) -> merge_rules.MergeRecord:
        record = await self.ledger.get(merge_id, session=session)
        if record is None:
            raise _refused(merge_rules.Rule.MERGE_NOT_FOUND)
        if record.status is merge_rules.MergeStatus.UNDONE:
            raise _refused(merge_rules.Rule.ALREADY_UNDONE)
        merged, survivor = record.merged, record.survivor
        # Everything the merged profile brought now sits at the live end of its
        # survivor's chain of later merges.
        holders = [survivor]
        sides = await self.store.merge_sides((merged, survivor), session=session)
        while (nxt := sides[holders[-1]].get("merged_into")) is not None:
            if nxt in holders or len(holders) > MAX_MERGE_CHAIN:
                raise RuntimeError(f"merge chain from {survivor} does not end")
            holders.append(nxt)
            sides.update(await self.store.merge_sides((nxt,), session=session))
        live = holders[-1]
        now = utcnow()

        keys_back = await self.identities.give_back_keys(merged, holder=live, session=session)
        observations = await self.store.give_back_history(merged, holder=live, session=session)
        events_back = await self.events.give_back(merged, holder=live, session=session)

        late_docs = await self.events.applied_since(live, record.merged_at, session=session)
        late = [
            merge_rules.LateEvent(d["_id"], d["timestamp"], identity_keys(d, self.rules))
            for d in late_docs
        ]
        owners = await self.identities.owners_in({k for e in late for k in e.keys}, session=session)
        late_keys = await self.identities.keys_since(live, record.merged_at, session=session)
        split = merge_rules.split_after_merge(late, owners, merged=merged, late_keys=late_keys)
        await self.identities.hand_over(split.keys, to_profile=merged, session=session)
        await self.events.reassign(split.events, to_profile=merged, session=session)
        observations += await self.store.move_event_history(
            split.events, from_profile=live, to_profile=merged, session=session
        )

        before = record.segments_before
        if not await self.store.revive(
            merged,
            survivor=survivor,
            identifiers=[_identifier(k) for k in split.keys],
            segments=list(before.get(merged, ())),
            now=now,
            session=session,
        ):
            raise _refused(merge_rules.Rule.ALREADY_UNDONE)
        await self.store.release(
            holders,
            merged=merged,
            lineage=list(sides[merged].get("absorbed", ())),
            identifiers=[_identifier(k) for k in [*keys_back, *split.keys]],
            segments=merge_rules.segments_after_unmerge(
                sides[live].get("segments", ()),
                before.get(survivor, ()),
                before.get(merged, ()),
            ),
            now=now,
            session=session,
        )
        await self._recompute(merged, session=session)
        await self._recompute(live, session=session)
        given_back = merge_rules.Moved(
            identities=len(keys_back) + len(split.keys),
            observations=observations,
            events=events_back + len(split.events),
        )
        if not await self.ledger.undone(
            merge_id, actor=actor, reason=reason, given_back=given_back, now=now, session=session
        ):
            raise _refused(merge_rules.Rule.ALREADY_UNDONE)
        await self.suggestions.decide(
            suggestion_id(survivor, merged),
            SuggestionStatus.REJECTED,
            note=f"unmerged by {actor.describe()}: not the same person",
            now=now,
            session=session,
        )
        undone = await self.ledger.get(merge_id, session=session)
        assert undone is not None  # written just above, in this transaction
        return undone

    async def accept_suggestion(
        self, suggestion_id: str, *, actor: merge_rules.Actor, survivor_id: str | None = None
    ) -> merge_rules.MergeRecord:
        """Merges the two profiles of an open suggestion (as they are now, after merges).

        The survivor is the rule's choice unless the admin names one of the two.
        """
        async with self._refusals_audited(
            actor, AuditAction.ACCEPT_SUGGESTION, target=suggestion_id, profiles=(), reason=""
        ):
            suggestion = await self._open_suggestion(suggestion_id)
            survivor, merged = await self._accepted_pair(suggestion, survivor_id)
        return await self._merge(
            survivor,
            merged,
            actor=actor,
            reason=f"accepted suggestion {suggestion.id}",
            score=suggestion.score,
            evidence=suggestion.evidence,
            cause={"suggestion": suggestion.id, "source": suggestion.source},
            action=AuditAction.ACCEPT_SUGGESTION,
            target=suggestion.id,
        )

    async def _accepted_pair(
        self, suggestion: Suggestion, survivor_id: str | None
    ) -> tuple[str, str]:
        """Returns (survivor, merged) of a suggestion's profiles as they are now."""
        a, b = [await self._live(pid) for pid in suggestion.profiles]
        if a == b:
            raise _refused(merge_rules.Rule.SAME_PROFILE, "the two profiles were merged already")
        if survivor_id is None:
            return await self.survivor_of(a, b)
        chosen = await self._live(survivor_id)
        if chosen not in (a, b):
            raise _refused(
                merge_rules.Rule.PROFILE_NOT_FOUND,
                f"profile {survivor_id!r} is not one of the suggestion's two",
            )
        return chosen, b if chosen == a else a

    async def reject_suggestion(
        self, suggestion_id: str, *, actor: merge_rules.Actor, reason: str
    ) -> Suggestion:
        """Marks a suggestion's profiles as not the same person: never merged automatically."""
        reason = merge_rules.checked_reason(reason, required=True)
        async with self._refusals_audited(
            actor, AuditAction.REJECT_SUGGESTION, target=suggestion_id, profiles=(), reason=reason
        ):
            suggestion = await self._open_suggestion(suggestion_id)
        a, b = suggestion.profiles

        async def body(session: AsyncClientSession) -> None:
            await self.suggestions.decide(
                suggestion.id,
                SuggestionStatus.REJECTED,
                note=f"not the same person ({actor.describe()}): {reason}",
                now=utcnow(),
                session=session,
            )
            await self.store.set_apart(a, b, session=session)
            await self._audit(
                actor,
                AuditAction.REJECT_SUGGESTION,
                target=suggestion.id,
                profiles=(a, b),
                reason=reason,
                outcome="done",
                session=session,
            )

        async with self.client.start_session() as session:
            await session.with_transaction(body)
        rejected = await self.suggestions.get(suggestion.id)
        assert rejected is not None
        return rejected

    async def _open_suggestion(self, suggestion_id: str) -> Suggestion:
        suggestion = await self.suggestions.get(suggestion_id)
        if suggestion is None:
            raise _refused(merge_rules.Rule.SUGGESTION_NOT_FOUND)
        if suggestion.status is not SuggestionStatus.OPEN:
            raise _refused(
                merge_rules.Rule.SUGGESTION_CLOSED,
                f"that suggestion is {suggestion.status.value} already",
            )
        return suggestion

    async def _live(self, profile_id: str) -> str:
        try:
            return (await self.profiles.get(profile_id, trait_keys=())).id
        except ProfileNotFound:
            raise _refused(
                merge_rules.Rule.PROFILE_NOT_FOUND, f"no profile has id {profile_id!r}"
            ) from None

    async def get_merge(self, merge_id: str) -> merge_rules.MergeRecord:
        """Returns a merge from the ledger; raises `MergeRefused(MERGE_NOT_FOUND)`."""
        record = await self.ledger.get(merge_id)
        if record is None:
            raise _refused(merge_rules.Rule.MERGE_NOT_FOUND)
        return record

    async def merges_of(self, profile_id: str) -> list[merge_rules.MergeRecord]:
        """Returns the merges a profile took part in (as either side), newest first."""
        return await self.ledger.of_profile(profile_id)

    async def audit(
        self, *, first: int, after: str | None = None, action: AuditAction | None = None
    ) -> tuple[list[AuditEntry], bool]:
        """Returns admin actions, newest first, after a cursor (an entry id); and if more follow."""
        docs, more = await self.audit_log.page(
            first=first, after=after, action=None if action is None else action.value
        )
        return [_audit_entry(d) for d in docs], more

    async def _audit(
        self,
        actor: merge_rules.Actor,
        action: AuditAction,
        *,
        target: str,
        profiles: Sequence[str],
        reason: str,
        outcome: str,
        session: AsyncClientSession | None,
    ) -> None:
        await self.audit_log.record(
            {
                "_id": new_id("aud"),
                "at": utcnow(),
                "actor": actor.to_document(),
                "action": action.value,
                "target": target,
                "profiles": list(profiles),
                "reason": reason,
                "outcome": outcome,
            },
            session=session,
        )


def _audit_entry(doc: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=doc["_id"],
        at=doc["at"],
        actor=merge_rules.Actor.from_document(doc["actor"]),
        action=AuditAction(doc["action"]),
        target=doc["target"],
        profiles=tuple(doc.get("profiles", ())),
        reason=doc.get("reason", ""),
        outcome=doc["outcome"],
    )
