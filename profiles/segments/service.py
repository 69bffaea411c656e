"""Segments: definitions with versions, full evaluation in MongoDB, real time in Python.

A full evaluation (`recompute`) runs the rule compiled to an aggregation and
writes the difference with the stored memberships. After each batch the
profile builder applies, `on_batch` re-evaluates, for the profiles it touched,
only the segments whose rules can see what changed, with the rule compiled to
a Python predicate over the profile and its events loaded once. Rules that
depend on time store, per profile, when its membership could next change by
time alone (`next_eval_at`); `run_due` re-evaluates exactly the profiles that
are due. Every entry and exit is logged in `segment_log` with its cause and
the segment's version, and handed to the webhooks' outbox in the same
transaction.
"""

import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from http import HTTPStatus
from typing import Any, Protocol

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession

from profiles.errors import KindredError
from profiles.ids import new_id
from profiles.segments import rules
from profiles.segments.models import Change, Transition
from profiles.segments.store import SegmentRecord, SegmentStore
from profiles.segments.templates import TEMPLATES
from profiles.service import utcnow

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]
WRITE_CHUNK = 1000
MAX_NAME = 100
_NAME = re.compile(r"^[\w .,:;!?()&'/+-]{1,100}$")


class SegmentNotFound(KindredError):
    """No live segment has that id."""

    code = "segment_not_found"
    status = HTTPStatus.NOT_FOUND


class InvalidSegment(KindredError):
    """A segment's name or references are unusable (rule errors are `InvalidSegmentRule`)."""

    code = "invalid_segment"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


class SegmentConflict(KindredError):
    """The segment changed since the version the caller read."""

    code = "segment_conflict"
    status = HTTPStatus.CONFLICT


class TransitionSink(Protocol):
    """Where membership changes go besides the log (the webhooks' outbox)."""

    async def enqueue(
        self, transitions: Sequence[Transition], *, session: AsyncClientSession | None = None
    ) -> int:
        """Records the transitions for delivery; returns how many rows it wrote."""
        ...


@dataclass(frozen=True)
class Touch:
    """What one builder batch changed of one profile."""

    traits: frozenset[str] = frozenset()
    event_names: frozenset[str] = frozenset()
    event_types: frozenset[str] = frozenset()
    last_event_id: str | None = None
    merged: bool = False  # another profile was merged into it


@dataclass
class RecomputeSummary:
    """What a full evaluation of one segment did."""

    segment_id: str
    version: int
    size: int = 0
    entered: int = 0
    exited: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class DueResult:
    """What one pass over the profiles due for a time rule did."""

    profiles: int
    transitions: list[Transition]


@dataclass(frozen=True)
class _Compiled:
    record: SegmentRecord
    rule: rules.Condition
    deps: rules.Dependencies


@dataclass
class _Evaluation:
    transitions: list[Transition] = field(default_factory=list)
    next_eval: dict[str, datetime | None] = field(default_factory=dict)


def mailable_pipeline(*, now: datetime) -> list[dict[str, Any]]:
    """Returns the stages keeping only profiles contactable by email.

    A valid email, not unsubscribed, and `email_marketing` consent granted.
    """
    rule = rules.parse_definition(
        {"version": rules.LANGUAGE_VERSION, "rule": {"type": "contactable", "channel": "email"}}
    ).rule
    return rules.to_pipeline(rule, now=now)


def segment_refs(definition: Mapping[str, Any]) -> set[str]:
    """Returns the ids of the segments a definition refers to."""
    return set(rules.dependencies(rules.parse_definition(definition).rule).segments)


def _affected(compiled: _Compiled, touch: Touch) -> bool:
    """Tells whether what a batch changed of a profile can change its membership."""
    deps = compiled.deps
    had_events = bool(touch.event_names or touch.event_types)
    return (
        touch.merged
        or bool(deps.traits & touch.traits)
        or bool(deps.computed & touch.traits)
        or (bool(deps.stats) and had_events)
        or bool(deps.event_names & touch.event_names)
        or (deps.any_event and had_events)
    )


def ordered(segments: Sequence[_Compiled]) -> list[_Compiled]:
    """Returns segments so that each comes after those its rule refers to."""
    by_id = {c.record.id: c for c in segments}
    done: dict[str, _Compiled] = {}

    def visit(c: _Compiled, path: tuple[str, ...]) -> None:
        if c.record.id in done:
            return
        for ref in sorted(c.deps.segments):
            if ref in by_id and ref not in path:
                visit(by_id[ref], (*path, c.record.id))
        done[c.record.id] = c

    for c in segments:
        visit(c, ())
    return list(done.values())


class SegmentService:
    """Creates, versions and evaluates segments; keeps memberships current."""

    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        store: SegmentStore,
        *,
        sink: TransitionSink | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.sink = sink

    # --- definitions -------------------------------------------------------------------

    async def create(
        self,
        *,
        name: str,
        definition: Mapping[str, Any],
        actor: str,
        now: datetime,
        description: str = "",
        template: str | None = None,
        segment_id: str | None = None,
    ) -> SegmentRecord:
        """Creates a segment (version 1) and evaluates it in full."""
        parsed = rules.parse_definition(definition)
        record = SegmentRecord(
            id=segment_id or new_id("seg"),
            name=_checked_name(name),
            description=description.strip()[:1000],
            definition=parsed.to_document(),
            version=1,
            created_at=now,
            updated_at=now,
            template=template,
        )
        await self._check_refs(record.id, parsed)
        await self.store.insert(record, actor=actor)
        await self.recompute(record.id, now=now)
        return record

    async def update(
        self,
        segment_id: str,
        *,
        definition: Mapping[str, Any] | None = None,
        name: str | None = None,
        description: str | None = None,
        expected_version: int | None = None,
        actor: str,
        now: datetime,
    ) -> SegmentRecord:
        """Stores a new version of a segment and evaluates it in full."""
        current = await self.get(segment_id)
        if expected_version is not None and expected_version != current.version:
            raise SegmentConflict(
                f"segment {segment_id} is at version {current.version}, not {expected_version}"
            )
        parsed = rules.parse_definition(
            definition if definition is not None else current.definition
        )
        await self._check_refs(segment_id, parsed)
        record = replace(
            current,
            name=_checked_name(name) if name is not None else current.name,
            description=description.strip()[:1000]
            if description is not None
            else current.description,
            definition=parsed.to_document(),
            version=current.version + 1,
            updated_at=now,
        )
        if not await self.store.replace(record, expected_version=current.version, actor=actor):
            raise SegmentConflict(f"segment {segment_id} changed meanwhile; read it again")
        await self.recompute(segment_id, now=now)
        return record

    async def delete(self, segment_id: str, *, now: datetime) -> bool:
        """Deletes a segment: its members exit (logged); its log and versions stay."""
        current = await self.get(segment_id)
        dependents = [
            s.id
            for s in await self.store.live()
            if s.id != segment_id and segment_id in segment_refs(s.definition)
        ]
        if dependents:
            raise InvalidSegment(
                f"segment {segment_id} is used by {', '.join(dependents)}; change those first"
            )
        if not await self.store.mark_deleted(segment_id, now=now):
            return False
        exits = [
            Transition(segment_id, current.version, pid, Change.EXITED, now, {"kind": "deleted"})
            async for pid in self.store.members(segment_id)
        ]
        await self._write(exits, {})
        return True

    async def install_templates(self, *, now: datetime, actor: str) -> list[tuple[str, str, int]]:
        """Installs the built-in segments not installed yet; returns (id, status, size) each.

        A template's segment has the template's id, so installing again changes
        nothing; one deleted since is left deleted.
        """
        rows = []
        for template in TEMPLATES:
            existing = await self.store.get(template.id)
            if existing is not None:
                status = "deleted earlier: not reinstalled" if existing.deleted else "present"
                rows.append((template.id, status, 0 if existing.deleted else existing.size))
                continue
            await self.create(
                name=template.name,
                definition=template.definition(),
                description=template.description,
                actor=actor,
                now=now,
                template=template.id,
                segment_id=template.id,
            )
            rows.append((template.id, "installed", (await self.get(template.id)).size))
        return rows

    async def get(self, segment_id: str) -> SegmentRecord:
        """Returns a live segment; raises `SegmentNotFound`."""
        record = await self.store.get(segment_id)
        if record is None or record.deleted:
            raise SegmentNotFound(f"no segment with id {segment_id!r}")
        return record

    async def _check_refs(self, segment_id: str, parsed: rules.Definition) -> None:
        refs = set(rules.dependencies(parsed.rule).segments)
        if segment_id in refs:
            raise InvalidSegment(f"segment {segment_id} cannot refer to itself")
        graph = {s.id: segment_refs(s.definition) for s in await self.store.live()}
        missing = sorted(refs - set(graph))
        if missing:
            raise InvalidSegment(f"rule refers to unknown segment {missing[0]!r}")
        graph[segment_id] = refs
        # A cycle through this segment would make membership depend on itself.
        stack, seen = list(refs), set()
        while stack:
            current = stack.pop()
            if current == segment_id:
                raise InvalidSegment(f"segment {segment_id} would depend on itself (a cycle)")
            if current not in seen:
                seen.add(current)
                stack.extend(graph.get(current, ()))

    async def _compiled(self) -> list[_Compiled]:
        found = []
        for record in await self.store.live():
            rule = rules.parse_definition(record.definition).rule
            found.append(_Compiled(record, rule, rules.dependencies(rule)))
        return ordered(found)

    # --- full evaluation ---------------------------------------------------------------

    async def recompute(
        self, segment_id: str, *, now: datetime, progress: Progress | None = None
    ) -> RecomputeSummary:
        """Evaluates a segment over every live profile in MongoDB and writes the difference."""
        started = time.perf_counter()
        record = await self.get(segment_id)
        rule = rules.parse_definition(record.definition).rule
        report = progress or (lambda _stage, _done, _total: None)
        report("evaluating", 0, None)
        members = {pid async for pid in self.store.evaluate(rules.to_pipeline(rule, now=now))}
        current = {pid async for pid in self.store.members(segment_id)}
        cause = {"kind": "recompute"}
        transitions = [
            Transition(segment_id, record.version, pid, Change.ENTERED, now, cause)
            for pid in sorted(members - current)
        ] + [
            Transition(segment_id, record.version, pid, Change.EXITED, now, cause)
            for pid in sorted(current - members)
        ]
        kept: list[Transition] = []
        for start in range(0, len(transitions), WRITE_CHUNK):
            kept += await self._write(transitions[start : start + WRITE_CHUNK], {})
            report("writing", min(start + WRITE_CHUNK, len(transitions)), len(transitions))
        await self.store.set_size(segment_id, len(members), now=now)
        return RecomputeSummary(
            segment_id=segment_id,
            version=record.version,
            size=len(members),
            entered=sum(t.change is Change.ENTERED for t in kept),
            exited=sum(t.change is Change.EXITED for t in kept),
            seconds=time.perf_counter() - started,
        )

    async def recompute_all(
        self, *, now: datetime, progress: Progress | None = None
    ) -> list[RecomputeSummary]:
        """Evaluates every segment in full, those referred to first."""
        return [
            await self.recompute(c.record.id, now=now, progress=progress)
            for c in await self._compiled()
        ]

    async def recompute_reading_computed(
        self, *, now: datetime, progress: Progress | None = None
    ) -> list[RecomputeSummary]:
        """Evaluates in full the segments whose rules read computed traits (after RFM)."""
        return [
            await self.recompute(c.record.id, now=now, progress=progress)
            for c in await self._compiled()
            if c.deps.computed
        ]

    # --- real time ---------------------------------------------------------------------

    async def on_batch(self, touched: Mapping[str, Touch], *, now: datetime) -> list[Transition]:
        """Re-evaluates the segments the batch can have changed, for the profiles it touched."""
        if not touched:
            return []
        compiled = await self._compiled()
        if not compiled:
            return []
        dependents = _dependents(compiled)
        wanted: dict[str, set[str]] = {}
        for pid, touch in touched.items():
            ids = {c.record.id for c in compiled if _affected(c, touch)}
            wanted[pid] = _closure(ids, dependents)
        if not any(wanted.values()):
            return []
        evaluation = await self._evaluate(
            compiled, wanted, now=now, cause=lambda pid: _event_cause(touched[pid])
        )
        return await self._write(evaluation.transitions, evaluation.next_eval)

    async def after_merge(self, profile_ids: Sequence[str]) -> None:
        """Re-evaluates every segment of profiles a merge or unmerge changed."""
        await self.on_batch({pid: Touch(merged=True) for pid in profile_ids}, now=utcnow())

    async def run_due(self, *, now: datetime, limit: int = 500) -> DueResult:
        """Re-evaluates the time-based segments of the profiles due by `now`."""
        due = await self.store.due(now=now, limit=limit)
        if not due:
            return DueResult(0, [])
        compiled = await self._compiled()
        timed = {c.record.id for c in compiled if c.deps.time_based}
        closure = _closure(timed, _dependents(compiled))
        evaluation = await self._evaluate(
            compiled,
            {pid: closure for pid in due},
            now=now,
            cause=lambda _pid: {"kind": "time"},
            exact_deadline=True,
        )
        for pid in due:
            evaluation.next_eval.setdefault(pid, None)
        kept = await self._write(evaluation.transitions, evaluation.next_eval)
        return DueResult(len(due), kept)

    async def schedule(self, *, now: datetime, progress: Progress | None = None) -> int:
        """Stores every profile's next time-based deadline for segments not scheduled yet.

        Real-time evaluation keeps deadlines current for profiles that change;
        this pass covers the rest after a time-based segment is created or changed.
        Returns how many profiles it looked at.
        """
        pending = await self.store.unscheduled()
        if not pending:
            return 0
        compiled = await self._compiled()
        timed = {c.record.id for c in compiled if c.deps.time_based}
        report = progress or (lambda _stage, _done, _total: None)
        seen = 0
        if timed:
            async for batch in self.store.scan_live():
                evaluation = await self._evaluate(
                    compiled,
                    {pid: timed for pid in batch},
                    now=now,
                    cause=lambda _pid: {"kind": "time"},
                    exact_deadline=True,
                    memberships=False,
                )
                await self._write([], evaluation.next_eval)
                seen += len(batch)
                report("scheduling time rules", seen, None)
        for record in pending:
            await self.store.mark_scheduled(record.id, record.version)
        return seen

    async def _evaluate(
        self,
        compiled: Sequence[_Compiled],
        wanted: Mapping[str, set[str]],
        *,
        now: datetime,
        cause: Callable[[str], Mapping[str, Any]],
        exact_deadline: bool = False,
        memberships: bool = True,
    ) -> _Evaluation:
        """Evaluates the wanted segments for each profile, in dependency order.

        The profiles' documents and events are read once for the whole batch.
        """
        profile_ids = [pid for pid, ids in wanted.items() if ids]
        docs = await self.store.facts(profile_ids)
        used = [c for c in compiled if any(c.record.id in wanted[p] for p in profile_ids)]
        deps = rules.Dependencies().union(*(c.deps for c in used))
        events: dict[str, list[dict[str, Any]]] = {pid: [] for pid in docs}
        if deps.reads_events:
            events = await self.store.events_of(docs, rules.event_query(deps, now=now))
        timed = {c.record.id for c in compiled if c.deps.time_based}
        result = _Evaluation()
        for pid, doc in docs.items():
            facts = rules.profile_facts(doc)
            seen = [rules.event_facts(e) for e in events.get(pid, ())]
            stored: datetime | None = doc.get("next_eval_at")
            deadlines: list[datetime] = []
            if not exact_deadline and stored is not None and not timed <= wanted[pid]:
                # Deadlines of time rules not evaluated here stay (a past one stays
                # due): the stored minimum may be theirs. Early is harmless.
                deadlines.append(stored)
            for c in used:
                if c.record.id not in wanted[pid]:
                    continue
                own = rules.relevant_events(c.deps, seen, now=now)
                if memberships:
                    inside = rules.matches(c.rule, facts, own, now=now)
                    was = c.record.id in facts.segments
                    if inside != was:
                        change = Change.ENTERED if inside else Change.EXITED
                        result.transitions.append(
                            Transition(c.record.id, c.record.version, pid, change, now, cause(pid))
                        )
                        members = set(facts.segments)
                        members.symmetric_difference_update({c.record.id})
                        facts = replace(facts, segments=frozenset(members))
                if c.deps.time_based:
                    at = rules.next_change(c.rule, facts, own, now=now)
                    if at is not None:
                        deadlines.append(at)
            new = min(deadlines) if deadlines else None
            if new != stored:
                result.next_eval[pid] = new
        return result

    async def _write(
        self, transitions: Sequence[Transition], next_eval: Mapping[str, datetime | None]
    ) -> list[Transition]:
        """Writes memberships, log rows, deadlines and outbox rows in one transaction.

        Returns the changes kept: one another writer applied first is not repeated.
        """
        if not transitions and not next_eval:
            return []

        async def body(session: AsyncClientSession) -> list[Transition]:
            kept = await self.store.apply(transitions, next_eval, session=session)
            if self.sink is not None and kept:
                await self.sink.enqueue(kept, session=session)
            return kept

        async with self.client.start_session() as session:
            kept = await session.with_transaction(body)
        sizes: dict[str, int] = defaultdict(int)
        for t in kept:
            sizes[t.segment_id] += 1 if t.change is Change.ENTERED else -1
        await self.store.add_to_size(sizes)
        return kept


def _dependents(compiled: Sequence[_Compiled]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for c in compiled:
        for ref in c.deps.segments:
            found[ref].add(c.record.id)
    return found


def _closure(ids: set[str], dependents: Mapping[str, set[str]]) -> set[str]:
    """Returns the segments and every segment that refers to them, transitively."""
    found, stack = set(ids), list(ids)
    while stack:
        for other in dependents.get(stack.pop(), ()):
            if other not in found:
                found.add(other)
                stack.append(other)
    return found


def _event_cause(touch: Touch) -> dict[str, Any]:
    cause: dict[str, Any] = {"kind": "merge" if touch.merged else "event"}
    if touch.last_event_id:
        cause["event_id"] = touch.last_event_id
    return cause


def _checked_name(name: str) -> str:
    text = name.strip()
    if not _NAME.match(text):
        raise InvalidSegment(
            f"name: 1 to {MAX_NAME} letters, digits, spaces and common punctuation"
        )
    return text
