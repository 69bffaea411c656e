"""The profile builder: turns pending events into profiles, one leased batch at a time.

For a batch it resolves every event to a profile through the identity graph,
creates and merges profiles as the events show, applies traits through the
profile store's one write path, and then, in one transaction, adds the events'
activity to the profiles' stats and marks the events applied. Every step before
the transaction is idempotent, and the transaction makes stats count each event
exactly once: a worker killed anywhere leaves a batch that the next one
completes to the same result.
"""

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession

from app.eventlog import EventLog
from identity import graph
from identity.events import IdentityRules, identity_keys, status_traits
from identity.matching import MATCH_TRAITS
from identity.matching_service import AutoMerge, MatchService
from identity.merge import Actor
from identity.service import MergeRefused, MergeService
from identity.store import IdentityStore, separated
from profiles import stats as activity
from profiles import traits as trait_rules
from profiles.errors import KindredError
from profiles.models import Identifier, Observation
from profiles.segments.service import SegmentService, Touch
from profiles.service import MAX_MERGE_CHAIN, ProfileService, utcnow

log = logging.getLogger(__name__)

MAX_RESOLUTION_ROUNDS = 8
MAX_STALE_ROUNDS = 32
GROUP_PREFIX = "group_"

Document = dict[str, Any]


class StaleAssignment(Exception):
    """A profile the batch was resolved to was merged away meanwhile."""


@dataclass(frozen=True)
class BatchResult:
    """What one batch did."""

    applied: int
    profiles: int
    created: int
    merged: int
    skipped_traits: int
    unattributed: int  # events whose every identifier was blocked


def observations_of(
    event: Mapping[str, Any], rules: IdentityRules
) -> tuple[list[Observation], int]:
    """Returns the trait observations an event makes, and how many it had to skip as invalid.

    An observed email or phone comes with its validation flags (`email_status`…).
    """
    origin = f"event:{event['_id']}"
    at, source = event["timestamp"], event["source"]
    raw: dict[str, Any] = dict((event.get("context") or {}).get("traits") or {})
    if event.get("type") == "identify":
        raw.update(event.get("traits") or {})
    elif event.get("type") == "group":
        raw.update({GROUP_PREFIX + k: v for k, v in (event.get("traits") or {}).items()})
        raw[GROUP_PREFIX + "id"] = event.get("group_id")
    raw.update(status_traits(event, rules))
    found, skipped = [], 0
    for key, value in raw.items():
        try:
            trait_rules.check_value(trait_rules.check_key(key), value)
        except KindredError:
            skipped += 1  # ingest checks identify traits; `context.traits` may still hold junk
            continue
        found.append(Observation(key, value, at, source, origin))
    return found, skipped


def _identifier(key: str) -> Identifier:
    kind, _, value = key.partition(":")
    return Identifier(kind, value)


class ProfileBuilder:
    """Applies pending events to profiles; several may run at once."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        *,
        profiles: ProfileService,
        identities: IdentityStore,
        events: EventLog,
        merges: MergeService,
        owner: str,
        batch_size: int = 500,
        lease: timedelta = timedelta(seconds=60),
        rules: IdentityRules | None = None,
        matcher: MatchService | None = None,
        segments: SegmentService | None = None,
    ) -> None:
        self.client = client
        self.profiles = profiles
        self.identities = identities
        self.events = events
        self.merges = merges
        self.owner = owner
        self.batch_size = batch_size
        self.lease = lease
        self.rules = rules or IdentityRules()
        self.matcher = matcher
        self.segments = segments

    async def run_batch(self, *, now: datetime | None = None) -> BatchResult:
        """Leases and applies one batch of pending events; returns what it did."""
        started = now or utcnow()
        docs = await self.events.claim(
            owner=self.owner, limit=self.batch_size, now=started, lease=self.lease
        )
        if not docs:
            return BatchResult(0, 0, 0, 0, 0, 0)
        for attempt in range(MAX_STALE_ROUNDS):
            try:
                return await self._apply(docs, now=started)
            except StaleAssignment:
                # A profile of this batch was merged away by another worker meanwhile:
                # resolve again; everything done so far is idempotent. A short random
                # pause keeps two workers on the same people from colliding in step.
                await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise RuntimeError("profiles kept being merged away under this batch")

    async def _apply(self, docs: Sequence[Document], *, now: datetime) -> BatchResult:
        plan, owners = await self._resolve(docs, now=now)
        for merge in plan.merges:
            await self._merge(
                merge.survivor, merge.merged, rule=GRAPH_MERGE_RULE, cause=_merge_cause(merge)
            )
        for refused in plan.refused:
            log.info(
                "merge refused",
                extra={
                    "reason": refused.reason.value,
                    "profiles": list(refused.profiles),
                    "event": refused.event_id,
                },
            )
        for key, pid in plan.over_limit.items():
            log.info(
                "identifier not linked: profile at its limit",
                extra={"kind": graph.kind_of(key), "profile": pid},
            )

        by_profile: dict[str, list[Observation]] = defaultdict(list)
        skipped = 0
        for doc in docs:
            if doc["_id"] not in plan.assignment:
                continue  # no usable identifier: nobody to attribute it to
            found, bad = observations_of(doc, self.rules)
            by_profile[plan.assignment[doc["_id"]]].extend(found)
            skipped += bad
        await self.profiles.apply_batch(by_profile, now=now)

        # Each profile lists every key its events carried that the graph gives it,
        # including keys of a profile merged into it by this batch.
        survivor_of = {m.merged: m.survivor for m in plan.merges}
        owned = {k: survivor_of.get(p, p) for k, p in {**owners, **plan.claims}.items()}
        claimed_keys: dict[str, list[Identifier]] = defaultdict(list)
        for doc in docs:
            pid = plan.assignment.get(doc["_id"], "")
            for key in identity_keys(doc, self.rules):
                if owned.get(key) == pid:
                    claimed_keys[pid].append(_identifier(key))

        async def finish(session: AsyncClientSession) -> int:
            return await self._finish(docs, plan, claimed_keys, session=session, now=now)

        async with self.client.start_session() as session:
            applied = await session.with_transaction(finish)
        await self._match(by_profile, plan, now=now)
        await self._segment(docs, by_profile, plan, now=now)
        return BatchResult(
            applied=applied,
            profiles=len(set(plan.assignment.values())),
            created=len(plan.new_profiles),
            merged=len(plan.merges),
            skipped_traits=skipped,
            unattributed=len(docs) - len(plan.assignment),
        )

    async def _match(
        self, by_profile: Mapping[str, Sequence[Observation]], plan: graph.Plan, *, now: datetime
    ) -> None:
        """Matches profiles whose identifying traits this batch wrote; merges the sure ones.

        It runs after the batch is applied: a failure here loses no event, and a
        later `kindred dedupe` finds what it missed.
        """
        if self.matcher is None:
            return
        identifying = set(MATCH_TRAITS)
        touched = {
            pid for pid, found in by_profile.items() if any(o.key in identifying for o in found)
        }
        touched |= {m.survivor for m in plan.merges}
        if not touched:
            return
        try:
            outcome = await self.matcher.refresh(touched, now=now)
            for sure in outcome.merges:
                await self.merge_sure(sure)
        except Exception:
            # The batch is committed: a failure here, even a bug, must not make it look
            # failed. It is logged, and a dedupe run catches up.
            log.exception("fuzzy matching failed; kindred dedupe will catch up")

    async def _segment(
        self,
        docs: Sequence[Document],
        by_profile: Mapping[str, Sequence[Observation]],
        plan: graph.Plan,
        *,
        now: datetime,
    ) -> None:
        """Re-evaluates the segments this batch can have changed, for its profiles.

        Like matching, it runs after the batch commits: a failure loses no event,
        and the next change or a recompute catches up.
        """
        if self.segments is None:
            return
        touched: dict[str, Touch] = {}
        by_pid: dict[str, list[Document]] = defaultdict(list)
        for doc in docs:
            pid = plan.assignment.get(doc["_id"])
            if pid is not None:
                by_pid[pid].append(doc)
        survivors = {m.survivor for m in plan.merges}
        for pid in set(by_pid) | survivors:
            events = by_pid.get(pid, [])
            last = max(events, key=lambda d: (d["timestamp"], d["_id"]), default=None)
            touched[pid] = Touch(
                traits=frozenset(o.key for o in by_profile.get(pid, ())),
                event_names=frozenset(
                    name for d in events if (name := d.get("event") or d.get("name"))
                ),
                event_types=frozenset(d["type"] for d in events),
                last_event_id=None if last is None else last["_id"],
                merged=pid in survivors,
            )
        try:
            await self.segments.on_batch(touched, now=now)
        except Exception:
            log.exception("segment evaluation failed; the next change or a recompute catches up")

    async def _resolve(
        self, docs: Sequence[Document], *, now: datetime
    ) -> tuple[graph.Plan, dict[str, str]]:
        sightings = [
            graph.Sighting(d["_id"], d["timestamp"], identity_keys(d, self.rules)) for d in docs
        ]
        all_keys = {k for s in sightings for k in s.keys}
        limits = self.rules.limits
        for _round in range(MAX_RESOLUTION_ROUNDS):
            owners, shared = await self._live_owners(all_keys)
            held = await self.identities.held_keys(set(owners.values()), kinds=limits.per_kind)
            plan = graph.plan(sightings, owners, held, limits=limits, shared=shared)
            if plan.merges:
                # Rare, so the extra read is paid only when an event links two profiles.
                merging = {p for m in plan.merges for p in (m.survivor, m.merged)}
                apart = await separated(self.profiles.store, merging)
                if apart:
                    plan = graph.plan(
                        sightings, owners, held, limits=limits, shared=shared, apart=apart
                    )
            won = await self.identities.claim(plan.claims, now=now)
            if not all(won.get(k) == pid for k, pid in plan.claims.items()):
                continue  # another worker claimed some key first: plan again with its claims
            if await self._share_contested(plan, now=now):
                continue  # keys stopped linking: plan again without them
            # Profiles whose keys we hold but that do not exist yet: new ones, and
            # any a crashed worker claimed keys for but never created.
            existing = await self.profiles.store.get_many(
                set(plan.assignment.values()), trait_keys=()
            )
            missing = set(plan.assignment.values()) - set(existing)
            await self.profiles.store.ensure_profiles(sorted(missing), now=now)
            return plan, owners
        raise RuntimeError("identity claims kept conflicting; giving up on this batch")

    async def _share_contested(self, plan: graph.Plan, *, now: datetime) -> bool:
        """Hands keys seen with too many people to device profiles; returns whether any."""
        newly = await self.identities.note_contested(
            plan.contested, shared_after=self.rules.limits.shared_after
        )
        for key, holder in newly.items():
            device = graph.deterministic_profile_id(f"shared:{key}", now)
            # The key moves first: if we die here, the next batch finds its holder
            # missing and creates it, like any profile claimed for but not created.
            if await self.identities.mark_shared(
                key, holder=holder, device_profile=device, now=now
            ):
                await self.profiles.store.ensure_profiles([device], now=now)
                log.warning(
                    "shared identifier: it links no one from now on",
                    extra={"kind": graph.kind_of(key), "holder": holder, "profile": device},
                )
        return bool(newly)

    async def _live_owners(self, keys: set[str]) -> tuple[dict[str, str], frozenset[str]]:
        # Keys of a merged-away profile count as its survivor's, even before a
        # (possibly interrupted) merge re-pointed them.
        owners, shared = await self.identities.lookup(keys)
        for _hop in range(MAX_MERGE_CHAIN):
            survivors = await self.profiles.store.merged_into(set(owners.values()))
            if not survivors:
                break
            owners = {k: survivors.get(p, p) for k, p in owners.items()}
        return owners, shared

    async def _finish(
        self,
        docs: Sequence[Document],
        plan: graph.Plan,
        claimed_keys: Mapping[str, Sequence[Identifier]],
        *,
        session: AsyncClientSession,
        now: datetime,
    ) -> int:
        # Inside the transaction: only events still leased to us and pending count,
        # so an event whose lease expired and went to another worker is not counted twice.
        mine = await self.events.still_leased(docs, owner=self.owner, session=session)
        grouped: dict[str | None, list[Document]] = defaultdict(list)
        for doc in mine:
            grouped[plan.assignment.get(doc["_id"])].append(doc)
        changes = {
            pid: (
                activity.delta_for(activity.activity_of(d) for d in events).update_document(),
                claimed_keys.get(pid, ()),
            )
            for pid, events in grouped.items()
            if pid is not None
        }
        if not await self.profiles.store.record_activity(changes, now=now, session=session):
            raise StaleAssignment()
        await self.events.mark_applied(
            {pid: [d["_id"] for d in events] for pid, events in grouped.items()},
            now=now,
            session=session,
        )
        return len(mine)

    async def merge_sure(self, sure: AutoMerge) -> bool:
        """Makes a fuzzy matcher's sure merge; returns False if a rule or a race refused it."""
        try:
            await self._merge(
                sure.survivor,
                sure.merged,
                rule=sure.rule,
                score=sure.score,
                evidence=sure.evidence,
            )
        except StaleAssignment:
            return False
        return True

    async def _merge(
        self,
        survivor: str,
        merged: str,
        *,
        rule: str,
        score: float | None = None,
        evidence: Sequence[Mapping[str, Any]] = (),
        cause: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            await self.merges.merge(
                survivor_id=survivor,
                merged_id=merged,
                actor=Actor.automatic(rule),
                reason="",
                score=score,
                evidence=evidence,
                cause=cause,
            )
        except MergeRefused as refused:
            # Another worker or an admin changed one of the two meanwhile: plan again.
            log.info(
                "merge refused",
                extra={"rule": refused.rule.value, "profiles": [survivor, merged]},
            )
            raise StaleAssignment() from None


GRAPH_MERGE_RULE = "an event carried identifiers of both profiles"


def _merge_cause(merge: graph.Merge) -> dict[str, Any]:
    return {"event_id": merge.event_id, "keys": list(merge.keys)}
