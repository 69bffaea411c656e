"""Merging and unmerging profiles: the rules, with no I/O.

A merge moves everything of one profile (the *merged*) to another (the
*survivor*) and leaves a tombstone behind. Every row it moves (identities,
trait history, events) gets the merged profile's id pushed onto its
`merged_from` list, so an unmerge knows exactly what to give back, through
chains of later merges too. What arrived after the merge is split by
`split_after_merge`: each event goes to the side its identifiers point to.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from identity import graph


class ActorKind(StrEnum):
    """Who made a merge or unmerge."""

    ADMIN = "admin"
    AUTOMATIC = "automatic"


@dataclass(frozen=True)
class Actor:
    """An admin (by API key) or an automatic rule."""

    kind: ActorKind
    key_id: str | None = None
    key_name: str | None = None
    rule: str | None = None  # for automatic merges: the rule that made it

    @classmethod
    def admin(cls, key_id: str, key_name: str | None = None) -> "Actor":
        """Returns the actor for an admin acting with an API key."""
        return cls(ActorKind.ADMIN, key_id=key_id, key_name=key_name)

    @classmethod
    def automatic(cls, rule: str) -> "Actor":
        """Returns the actor for a merge an identity rule made."""
        return cls(ActorKind.AUTOMATIC, rule=rule)

    def describe(self) -> str:
        """Returns the actor in a few words, for logs and the console."""
        if self.kind is ActorKind.ADMIN:
            return f"admin {self.key_name or self.key_id}"
        return f"automatic ({self.rule})"

    def to_document(self) -> dict[str, Any]:
        """Returns the actor as stored in the ledger and the audit log."""
        doc: dict[str, Any] = {"kind": self.kind.value}
        for name in ("key_id", "key_name", "rule"):
            if getattr(self, name) is not None:
                doc[name] = getattr(self, name)
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> "Actor":
        """Returns the actor a stored document describes."""
        return cls(
            ActorKind(doc["kind"]),
            key_id=doc.get("key_id"),
            key_name=doc.get("key_name"),
            rule=doc.get("rule"),
        )


class Rule(StrEnum):
    """The rule that refused a merge, an unmerge or a review decision."""

    SAME_PROFILE = "same_profile"
    PROFILE_NOT_FOUND = "profile_not_found"
    ALREADY_MERGED = "already_merged"  # one of the two is a tombstone now
    DIFFERENT_USER_IDS = "different_user_ids"
    TOO_MANY_IDENTIFIERS = "too_many_identifiers"
    NOT_SAME_PERSON = "not_same_person"  # an admin said so; automatic merges only
    MERGE_NOT_FOUND = "merge_not_found"
    ALREADY_UNDONE = "already_undone"
    SUGGESTION_NOT_FOUND = "suggestion_not_found"
    SUGGESTION_CLOSED = "suggestion_closed"
    REASON_REQUIRED = "reason_required"


MAX_REASON = 500

RULE_MESSAGES = {
    Rule.SAME_PROFILE: "a profile cannot be merged with itself",
    Rule.PROFILE_NOT_FOUND: "no profile has that id",
    Rule.ALREADY_MERGED: "the profile was merged into another one; merge its survivor instead",
    Rule.DIFFERENT_USER_IDS: "the two profiles hold different user ids: one person has one",
    Rule.TOO_MANY_IDENTIFIERS: "together the profiles would hold more emails or phones than "
    "the limit allows",
    Rule.NOT_SAME_PERSON: "an admin marked these profiles as not the same person",
    Rule.MERGE_NOT_FOUND: "no merge has that id",
    Rule.ALREADY_UNDONE: "that merge was undone already",
    Rule.SUGGESTION_NOT_FOUND: "no merge suggestion has that id",
    Rule.SUGGESTION_CLOSED: "that suggestion was decided already",
    Rule.REASON_REQUIRED: f"give a reason of 1 to {MAX_REASON} printable characters",
}


class MergeStatus(StrEnum):
    """Where a merge in the ledger stands."""

    DONE = "done"
    UNDONE = "undone"


@dataclass(frozen=True)
class Moved:
    """How many rows a merge moved to the survivor, or an unmerge gave back."""

    identities: int = 0
    observations: int = 0
    events: int = 0

    def to_document(self) -> dict[str, int]:
        """Returns the counts as stored."""
        return {
            "identities": self.identities,
            "observations": self.observations,
            "events": self.events,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None) -> "Moved":
        """Returns the counts a stored document holds."""
        doc = doc or {}
        return cls(doc.get("identities", 0), doc.get("observations", 0), doc.get("events", 0))


@dataclass(frozen=True)
class MergeRecord:
    """One merge in the ledger: who made it, why, what moved, and whether it was undone."""

    id: str
    survivor: str
    merged: str
    actor: Actor
    reason: str
    merged_at: datetime
    status: MergeStatus
    score: float | None = None
    evidence: tuple[Mapping[str, Any], ...] = ()
    cause: Mapping[str, Any] = field(default_factory=dict)  # e.g. the event that linked them
    moved: Moved = Moved()
    # Each side's segment memberships just before the merge, to give them back.
    segments_before: Mapping[str, Sequence[str]] = field(default_factory=dict)
    undone_at: datetime | None = None
    undone_by: Actor | None = None
    undo_reason: str | None = None
    given_back: Moved = Moved()


def kept_apart(
    lineage_a: frozenset[str], lineage_b: frozenset[str], apart: Mapping[str, frozenset[str]]
) -> bool:
    """Tells whether an admin said someone in one lineage is not someone in the other.

    A lineage is a profile and every profile merged into it; `apart` holds the
    `apart_from` of every profile in both.
    """
    return any(apart.get(p, frozenset()) & lineage_b for p in lineage_a) or any(
        apart.get(p, frozenset()) & lineage_a for p in lineage_b
    )


def refusal(
    survivor_keys: Iterable[str],
    merged_keys: Iterable[str],
    *,
    limits: graph.Limits,
    apart: bool,
    by_admin: bool,
) -> Rule | None:
    """Returns the rule that forbids merging profiles holding these limited keys, or None.

    One user id per profile and the per-kind limits hold for everyone; an
    admin's "not the same person" (`apart`) stops automatic merges only, since
    an admin merging by hand is saying otherwise.
    """
    reason = graph.refusal_reason(set(survivor_keys), set(merged_keys), limits)
    if reason is graph.RefusalReason.DIFFERENT_USER_IDS:
        return Rule.DIFFERENT_USER_IDS
    if reason is graph.RefusalReason.TOO_MANY_IDENTIFIERS:
        return Rule.TOO_MANY_IDENTIFIERS
    if apart and not by_admin:
        return Rule.NOT_SAME_PERSON
    return None


def checked_reason(reason: str | None, *, required: bool) -> str:
    """Returns the reason trimmed; raises ValueError if required and missing, or unfit."""
    text = (reason or "").strip()
    if (required and not text) or len(text) > MAX_REASON or not text.isprintable():
        raise ValueError(RULE_MESSAGES[Rule.REASON_REQUIRED])
    return text


def unique(items: Iterable[str]) -> list[str]:
    """Returns the items without repeats, in first-seen order."""
    return list(dict.fromkeys(items))


def segments_after_merge(survivor: Sequence[str], merged: Sequence[str]) -> list[str]:
    """Returns the survivor's memberships after a merge: both sides', none lost.

    Until segments are evaluated from rules, a membership of either person is a
    membership of the two of them together.
    """
    return unique([*survivor, *merged])


def segments_after_unmerge(
    current: Sequence[str], survivor_before: Sequence[str], merged_before: Sequence[str]
) -> list[str]:
    """Returns the survivor's memberships after an unmerge.

    It keeps what it has now, less what only the merged side brought.
    """
    brought = set(merged_before) - set(survivor_before)
    return [s for s in current if s not in brought]


def unwound(merged_from: Sequence[str], profile_id: str) -> list[str]:
    """Returns a row's `merged_from` once the merge of `profile_id` is undone.

    Entries after it name the merges its survivor went through later; they go too.
    """
    if profile_id not in merged_from:
        return list(merged_from)
    return list(merged_from[: list(merged_from).index(profile_id)])


@dataclass(frozen=True)
class LateEvent:
    """An event applied to the survivor after the merge, with its identity keys."""

    id: str
    timestamp: datetime
    keys: tuple[str, ...]


@dataclass
class Split:
    """Which late events and late-linked keys go back to the merged side."""

    events: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


def split_after_merge(
    events: Iterable[LateEvent],
    owners: Mapping[str, str],
    *,
    merged: str,
    late_keys: Iterable[str],
) -> Split:
    """Returns the late events and keys that belong to the merged side.

    `owners` gives each key's profile once the merged side has its own keys
    back. Keys linked after the merge (`late_keys`) are undecided: each goes to
    the side of the first event, in time order, that carried it. An event goes
    to the side its strongest decided key points to; an event with no decided
    key stays with the survivor.
    """
    undecided = set(late_keys)
    side: dict[str, bool] = {k: p == merged for k, p in owners.items() if k not in undecided}
    split = Split()
    for event in sorted(events, key=lambda e: (e.timestamp, e.id)):
        decided = [k for k in graph.by_priority(event.keys) if k in side]
        to_merged = bool(decided) and side[decided[0]]
        for key in event.keys:
            if key in undecided and key not in side:
                side[key] = to_merged
                if to_merged:
                    split.keys.append(key)
        if to_merged:
            split.events.append(event.id)
    return split
