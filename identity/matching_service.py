"""Fuzzy matching against the stored profiles: online after each batch, and batch dedupe runs.

The pure matcher (`identity.matching`) scores; this module reads the profiles'
identifying traits, keeps their blocking keys (`match_keys`, indexed) current,
records suggestions, and says which pairs to merge automatically. The caller
performs merges, as the profile builder does for the identity graph's own.
"""

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from identity import graph, matching
from identity.store import IdentityStore, Proposal, SuggestionStore, separated
from profiles.store import ProfileStore

MODEL_TTL_SECONDS = 60.0
MAX_ONLINE_CANDIDATES = 5_000  # profiles one online pass reads at most
SCORE_CHUNK = 200_000  # pairs scored at once by a dedupe run: bounds its memory

Progress = Callable[[str, int, int | None], None]  # stage, done, total (None: unknown)


@dataclass(frozen=True)
class MatchSettings:
    """How the matcher decides, and how far the online lookup reaches."""

    thresholds: matching.Thresholds = field(default_factory=matching.Thresholds)
    limits: graph.Limits = field(default_factory=graph.Limits)
    max_block: int = matching.DEFAULT_MAX_BLOCK
    phone_region: str = "US"
    merge: bool = True  # False: sure pairs are suggested, never merged


FUZZY_MERGE_RULE = "fuzzy match at or above the auto-merge threshold"


@dataclass(frozen=True)
class AutoMerge:
    """Two profiles the matcher is sure enough of to merge, with its evidence."""

    survivor: str
    merged: str
    score: float
    evidence: tuple[Mapping[str, Any], ...]

    rule: str = FUZZY_MERGE_RULE


@dataclass
class MatchOutcome:
    """What one matching pass found."""

    profiles: int = 0
    candidate_pairs: int = 0
    blocks_skipped: int = 0
    suggested: int = 0  # pairs at or above the suggest threshold, merges excluded
    new_suggestions: int = 0
    downgraded: int = 0  # sure pairs suggested instead: two user ids, or over a limit
    merges: list[AutoMerge] = field(default_factory=list)
    model: str = "default"
    seconds: float = 0.0


class MatchService:
    """Finds look-alike profiles and records them as suggestions or merges."""

    def __init__(
        self,
        *,
        profiles: ProfileStore,
        identities: IdentityStore,
        suggestions: SuggestionStore,
        settings: MatchSettings | None = None,
    ) -> None:
        self.profiles = profiles
        self.identities = identities
        self.suggestions = suggestions
        self.settings = settings or MatchSettings()
        self._model: tuple[float, matching.Model, str] | None = None

    async def model(self) -> tuple[matching.Model, str]:
        """Returns the model the last dedupe run fitted (else the defaults), and which."""
        now = time.monotonic()
        if self._model is None or now - self._model[0] > MODEL_TTL_SECONDS:
            doc = await self.suggestions.load_model()
            if doc is None:
                self._model = (now, matching.default_model(), "default")
            else:
                self._model = (now, matching.Model.from_document(doc["model"]), "fitted")
        return self._model[1], self._model[2]

    def _record(self, values: Mapping[str, Any]) -> dict[str, str | None]:
        return matching.record_from_traits(values, region=self.settings.phone_region)

    async def refresh(self, profile_ids: Iterable[str], *, now: datetime) -> MatchOutcome:
        """Updates the profiles' blocking keys and matches those whose keys changed.

        Called by the builder for profiles whose identifying traits it just
        wrote; candidates are found through the `match_keys` index.
        """
        started = time.perf_counter()
        inputs = await self.profiles.match_inputs(profile_ids, trait_keys=matching.MATCH_TRAITS)
        records = {pid: self._record(values) for pid, (values, _) in inputs.items()}
        keys = {pid: matching.blocking_keys(r) for pid, r in records.items()}
        changed = {pid: k for pid, k in keys.items() if k != inputs[pid][1]}
        outcome = MatchOutcome(profiles=len(changed))
        if not changed:
            return outcome
        await self.profiles.set_match_keys(changed)
        wanted = {k for ks in changed.values() for k in ks}
        # A block over the cap is skipped, as a dedupe run skips it; the read is
        # bounded too, so a batch of common keys cannot pull the collection in.
        limit = min((self.settings.max_block + 1) * len(wanted), MAX_ONLINE_CANDIDATES)
        found = await self.profiles.sharing_match_keys(
            wanted, trait_keys=matching.MATCH_TRAITS, limit=limit
        )
        holders: dict[str, set[str]] = defaultdict(set)
        for pid, (_, stored) in found.items():
            for key in stored:
                if key in wanted:
                    holders[key].add(pid)
        pairs: set[tuple[str, str]] = set()
        for pid, own in changed.items():
            for key in own:
                block = holders.get(key, set())
                if len(block) > self.settings.max_block:
                    outcome.blocks_skipped += 1
                    continue
                pairs.update((pid, other) for other in block if other != pid)
        unique = sorted({(min(a, b), max(a, b)) for a, b in pairs})
        outcome.candidate_pairs = len(unique)
        if not unique:
            return outcome
        for pid, (values, _) in found.items():
            records.setdefault(pid, self._record(values))
        model, outcome.model = await self.model()
        scored = await asyncio.to_thread(_score_pairs, records, unique, model, workers=1)
        sure: list[_Sure] = []
        await self._act(scored, outcome, sure, source="online", now=now, dry_run=False)
        await self._merges(sure, outcome, source="online", now=now, dry_run=False)
        outcome.seconds = time.perf_counter() - started
        return outcome

    async def dedupe(
        self,
        *,
        dry_run: bool = False,
        fit: bool = True,
        progress: Progress | None = None,
        now: datetime,
    ) -> MatchOutcome:
        """Matches every live profile against every other through blocking; re-runnable.

        Reads the profiles in batches, fits the model by EM (unless `fit` is
        false), scores candidate pairs a chunk at a time, and records
        suggestions; pairs found before keep one suggestion. Unless a dry run,
        it also stores the fitted model and every profile's blocking keys, so
        the online path finds candidates among profiles that predate it.
        """
        started = time.perf_counter()
        report = progress or (lambda _stage, _done, _total: None)
        total = await self.profiles.estimated_count()
        ids: list[str] = []
        records: list[dict[str, str | None]] = []
        async for batch in self.profiles.scan_live(trait_keys=matching.MATCH_TRAITS):
            for pid, values in batch:
                ids.append(pid)
                records.append(self._record(values))
            report("reading profiles", len(ids), max(total, len(ids)))
        outcome = MatchOutcome(profiles=len(ids))
        if len(ids) < 2:
            outcome.seconds = time.perf_counter() - started
            return outcome
        table = await asyncio.to_thread(matching.Table.from_records, ids, records)
        blocking = await asyncio.to_thread(matching.block, table, max_block=self.settings.max_block)
        outcome.candidate_pairs = len(blocking.pairs)
        outcome.blocks_skipped = blocking.blocks_skipped
        if fit:
            report("fitting the model", 0, None)
            model = await asyncio.to_thread(matching.estimate, table, None, blocking.pairs)
            outcome.model = "fitted"
        else:
            model, outcome.model = await self.model()
        sure: list[_Sure] = []
        for start in range(0, len(blocking.pairs), SCORE_CHUNK):
            chunk = blocking.pairs[start : start + SCORE_CHUNK]
            scores = await asyncio.to_thread(matching.score, table, None, chunk, model)
            scored = _Scored(table.ids, scores)
            await self._act(scored, outcome, sure, source="dedupe", now=now, dry_run=dry_run)
            report("scoring pairs", start + len(chunk), len(blocking.pairs))
        await self._merges(sure, outcome, source="dedupe", now=now, dry_run=dry_run)
        if not dry_run:
            await self._store_keys(table, report)
            if fit:
                await self.suggestions.save_model(model.to_document(), now=now)
                self._model = None
        outcome.seconds = time.perf_counter() - started
        return outcome

    async def _store_keys(self, table: matching.Table, report: Progress) -> None:
        by_row: dict[int, list[str]] = defaultdict(list)
        for row, key in zip(table.key_records.tolist(), table.key_values.tolist(), strict=True):
            by_row[row].append(str(key))
        rows = list(range(len(table)))
        for start in range(0, len(rows), 1000):
            part = rows[start : start + 1000]
            await self.profiles.set_match_keys(
                {table.ids[r]: sorted(set(by_row.get(r, []))) for r in part}
            )
            report("storing blocking keys", start + len(part), len(rows))

    async def _act(
        self,
        scored: "_Scored",
        outcome: MatchOutcome,
        sure: list["_Sure"],
        *,
        source: str,
        now: datetime,
        dry_run: bool,
    ) -> None:
        """Records the scored pairs' suggestions; collects the sure ones for `_merges`."""
        scores = scored.scores
        decisions = matching.decide(scores, self.settings.thresholds)
        keep = np.flatnonzero(decisions != matching.Decision.NONE)
        if not len(keep):
            return
        pairs = [(scored.ids[int(a)], scored.ids[int(b)]) for a, b in scores.pairs[keep]]
        proposals: list[Proposal] = []
        for row, (a, b) in zip(keep.tolist(), pairs, strict=True):
            evidence = tuple(e.to_document() for e in matching.explain(scores, row))
            probability = float(scores.probability[row])
            if decisions[row] == matching.Decision.MERGE:
                sure.append(_Sure(a, b, probability, evidence))
            else:
                proposals.append(Proposal(a, b, probability, evidence))
        await self._suggest(proposals, outcome, source=source, now=now, dry_run=dry_run)

    async def _suggest(
        self,
        proposals: list[Proposal],
        outcome: MatchOutcome,
        *,
        source: str,
        now: datetime,
        dry_run: bool,
    ) -> None:
        outcome.suggested += len(proposals)
        if proposals and not dry_run:
            outcome.new_suggestions += await self.suggestions.record(
                proposals, source=source, now=now
            )

    async def _merges(
        self,
        sure: list["_Sure"],
        outcome: MatchOutcome,
        *,
        source: str,
        now: datetime,
        dry_run: bool,
    ) -> None:
        """Plans the sure pairs' merges as one closure, best score first.

        Pairs chain (a~b, b~c): each merge joins the clusters the two profiles
        are in by then, and is refused, and suggested instead, if the joined
        cluster would hold two user ids or too many emails or phones.
        """
        if not sure:
            return
        if not self.settings.merge:
            note = "not merged automatically: automatic merges are off"
            off = [Proposal(p.a, p.b, p.score, p.evidence, note) for p in sure]
            outcome.downgraded += len(off)
            await self._suggest(off, outcome, source=source, now=now, dry_run=dry_run)
            return
        held = await self.identities.held_keys(
            {p for pair in sure for p in (pair.a, pair.b)}, kinds=self.settings.limits.per_kind
        )
        keys: dict[str, set[str]] = {pid: set(k) for pid, k in held.items()}
        # Pairs an admin said are not one person stay apart, through chains too.
        apart = graph.ApartPairs(await separated(self.profiles, keys))
        parent: dict[str, str] = {}

        def find(pid: str) -> str:
            while pid in parent:
                pid = parent[pid]
            return pid

        refused: list[Proposal] = []
        for pair in sorted(sure, key=lambda p: (-p.score, p.a, p.b)):
            a, b = find(pair.a), find(pair.b)
            if a == b:
                continue
            reason = graph.refusal_reason(
                keys.get(a, set()), keys.get(b, set()), self.settings.limits
            )
            if reason is None and apart.between(a, b):
                reason = graph.RefusalReason.NOT_SAME_PERSON
            if reason is not None:
                note = f"not merged automatically: {reason.value.replace('_', ' ')}"
                refused.append(Proposal(pair.a, pair.b, pair.score, pair.evidence, note))
                continue
            survivor, merged = sorted((a, b), key=lambda p: graph.survivor_rank(p, keys))
            parent[merged] = survivor
            apart.join(survivor, merged)
            keys[survivor] = keys.get(survivor, set()) | keys.pop(merged, set())
            outcome.merges.append(AutoMerge(survivor, merged, pair.score, pair.evidence))
        outcome.downgraded += len(refused)
        await self._suggest(refused, outcome, source=source, now=now, dry_run=dry_run)


@dataclass(frozen=True)
class _Sure:
    """A pair at or above the merge threshold with a strong identifier agreeing."""

    a: str
    b: str
    score: float
    evidence: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class _Scored:
    ids: Sequence[str]
    scores: matching.Scores


def _score_pairs(
    records: Mapping[str, Mapping[str, str | None]],
    pairs: Sequence[tuple[str, str]],
    model: matching.Model,
    *,
    workers: int,
) -> _Scored:
    ids = sorted({p for pair in pairs for p in pair})
    row = {pid: n for n, pid in enumerate(ids)}
    table = matching.Table.from_records(ids, [records[pid] for pid in ids])
    index = np.array([(row[a], row[b]) for a, b in pairs], dtype=np.int64)
    return _Scored(ids, matching.score(table, None, index, model, workers=workers))
