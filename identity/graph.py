"""Planning identity resolution for a batch of events, with no I/O.

Each event carries identity keys (`user_id:…`, `email:…`, `phone:…`,
`anonymous_id:…`). The plan says which profile each event belongs to, which
keys to claim for which profile, which new profiles to create, and which
existing profiles to merge because one event showed they are the same person.
"""

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from profiles.ids import new_id

# Highest first: a new profile is named after its strongest key.
KIND_PRIORITY = ("user_id", "email", "email_canonical", "phone", "anonymous_id")


def kind_of(key: str) -> str:
    """Returns the kind part of an identity key."""
    return key.partition(":")[0]


def by_priority(keys: Iterable[str]) -> tuple[str, ...]:
    """Returns the keys strongest first, then in text order."""

    def rank(key: str) -> tuple[int, str]:
        kind = kind_of(key)
        return (KIND_PRIORITY.index(kind) if kind in KIND_PRIORITY else len(KIND_PRIORITY), key)

    return tuple(sorted(set(keys), key=rank))


def deterministic_profile_id(key: str, first_seen: datetime) -> str:
    """Returns the id of the profile a key founds: sortable by first sighting, same on retry.

    Two workers, or one worker after a crash, that found a profile for the same
    key from the same event pick the same id, so their claims agree.
    """
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:10], "big")
    ms = int(first_seen.timestamp() * 1000)
    return new_id("prf", now_ms=ms, random=digest)


@dataclass(frozen=True)
class Sighting:
    """The identity keys one event carries."""

    event_id: str
    timestamp: datetime
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Merge:
    """Two profiles one event showed to be the same person."""

    survivor: str
    merged: str
    event_id: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Limits:
    """How many keys of a kind one profile may hold, and when a key counts as shared.

    A key (a device's anonymous id, a family's email) seen with more than
    `shared_after` distinct user ids stops linking: it belongs to a device
    profile of its own from then on.
    """

    per_kind: Mapping[str, int] = field(
        default_factory=lambda: {"user_id": 1, "email": 5, "phone": 5}
    )
    shared_after: int = 3


class RefusalReason(StrEnum):
    """Why the graph did not merge profiles an event linked."""

    DIFFERENT_USER_IDS = "different_user_ids"
    TOO_MANY_IDENTIFIERS = "too_many_identifiers"
    NOT_SAME_PERSON = "not_same_person"  # an admin said so


@dataclass(frozen=True)
class Refusal:
    """Profiles one event linked that were not merged, and why."""

    profiles: tuple[str, ...]
    event_id: str
    keys: tuple[str, ...]
    reason: RefusalReason = RefusalReason.DIFFERENT_USER_IDS


@dataclass
class Plan:
    """What resolving a batch will write."""

    assignment: dict[str, str] = field(default_factory=dict)  # event id -> profile id
    claims: dict[str, str] = field(default_factory=dict)  # key -> profile id
    new_profiles: dict[str, datetime] = field(default_factory=dict)  # id -> first seen
    merges: list[Merge] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    # Keys left unclaimed because their profile holds its maximum of that kind.
    over_limit: dict[str, str] = field(default_factory=dict)  # key -> profile id
    # Keys held by one user's profile that an event showed with another user id.
    contested: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def plan(
    sightings: Iterable[Sighting],
    owners: Mapping[str, str],
    held: Mapping[str, frozenset[str]],
    *,
    limits: Limits | None = None,
    shared: frozenset[str] = frozenset(),
    apart: frozenset[frozenset[str]] = frozenset(),
) -> Plan:
    """Returns the plan for the sightings, in time order, given the graph's current owners.

    `held` gives the keys of limited kinds (`limits.per_kind`: user ids,
    emails, phones) that each profile in `owners` holds. Two profiles holding
    different user ids are never merged automatically, nor two whose keys
    together exceed a kind's limit; a profile never takes a key beyond its
    limit. Such events stay with the profile of their strongest key, and the
    refusal is reported. `shared` keys link nothing: an event carrying only
    shared keys goes to their holder. Pairs in `apart` (an admin said they are
    not the same person) are never merged, nor the profiles merged into them.
    """
    limits = limits or Limits()
    result = Plan()
    owner = dict(owners)
    # A profile missing from `held` was claimed for but not created yet (by
    # another worker, or one that crashed): it holds no key so far.
    limited: dict[str, set[str]] = {pid: set() for pid in owner.values()}
    limited.update(
        {pid: {k for k in keys if kind_of(k) in limits.per_kind} for pid, keys in held.items()}
    )
    survivor_of: dict[str, str] = {}
    kept_apart = ApartPairs(apart)

    def find(pid: str) -> str:
        while pid in survivor_of:
            pid = survivor_of[pid]
        return pid

    def uids(pid: str) -> set[str]:
        return {k for k in limited.get(pid, ()) if kind_of(k) == "user_id"}

    for sighting in sorted(sightings, key=lambda s: (s.timestamp, s.event_id)):
        every = by_priority(sighting.keys)
        keys = tuple(k for k in every if k not in shared)
        if not keys:
            if every:  # shared keys only: their holder's activity, linking nothing
                result.assignment[sighting.event_id] = find(owner[every[0]])
            continue
        found = {find(owner[k]) for k in keys if k in owner}
        user_key = next((k for k in keys if kind_of(k) == "user_id"), None)
        if user_key is not None:
            # Someone else's profile reached through a shared email or device is not
            # this user's: it is reported, and the user gets a profile of their own.
            other_users = {p for p in found if uids(p) and uids(p) != {user_key}}
            if other_users:
                result.refused.append(Refusal(tuple(sorted(other_users)), sighting.event_id, keys))
                for key in keys:
                    if key in owner and find(owner[key]) in other_users:
                        result.contested[key].add(user_key)
            found -= other_users
        if not found:
            pid = deterministic_profile_id(keys[0], sighting.timestamp)
            result.new_profiles[pid] = sighting.timestamp
            limited.setdefault(pid, set())
        else:
            pid = _join(result, found, limited, limits, survivor_of, sighting, keys, kept_apart)
        for key in keys:
            if key in owner:
                continue
            kind = kind_of(key)
            if kind in limits.per_kind:
                if sum(kind_of(k) == kind for k in limited[pid]) >= limits.per_kind[kind]:
                    if kind != "user_id":
                        result.over_limit[key] = pid
                    continue  # the user id case is a refusal reported above
                limited[pid].add(key)
            owner[key] = pid
            result.claims[key] = pid
        result.assignment[sighting.event_id] = pid

    # Profiles merged away inside this plan hand everything to their survivor.
    result.assignment = {e: find(p) for e, p in result.assignment.items()}
    result.claims = {k: find(p) for k, p in result.claims.items()}
    result.over_limit = {k: find(p) for k, p in result.over_limit.items()}
    for merged in list(result.new_profiles):
        if merged in survivor_of:
            del result.new_profiles[merged]
    return result


def survivor_rank(pid: str, limited: Mapping[str, set[str]]) -> tuple[bool, str]:
    """Returns the sort key that puts a merge's survivor first, given each profile's keys.

    The documented rule: a profile with a user id wins, else the oldest (ids sort by age).
    """
    has_user_id = any(kind_of(k) == "user_id" for k in limited.get(pid, ()))
    return (not has_user_id, pid)


def refusal_reason(a: set[str], b: set[str], limits: Limits) -> RefusalReason | None:
    """Returns why two profiles holding these limited keys may not merge, if they may not."""
    together = a | b
    user_ids = {k for k in together if kind_of(k) == "user_id"}
    if len(user_ids) > 1:
        return RefusalReason.DIFFERENT_USER_IDS
    for kind, most in limits.per_kind.items():
        if sum(kind_of(k) == kind for k in together) > most:
            return RefusalReason.TOO_MANY_IDENTIFIERS
    return None


@dataclass
class ApartPairs:
    """Pairs kept apart, checked across everything merged so far in a plan."""

    pairs: frozenset[frozenset[str]]
    members: dict[str, set[str]] = field(default_factory=dict)

    def between(self, a: str, b: str) -> bool:
        """Tells whether anyone `a` stands for was kept apart from anyone `b` stands for."""
        if not self.pairs:
            return False
        left, right = self.members.get(a, {a}), self.members.get(b, {b})
        return any(frozenset((x, y)) in self.pairs for x in left for y in right)

    def join(self, survivor: str, merged: str) -> None:
        """Records that `survivor` stands for `merged` too from now on."""
        if self.pairs:
            self.members[survivor] = self.members.get(survivor, {survivor}) | self.members.pop(
                merged, {merged}
            )


def _join(
    result: Plan,
    found: set[str],
    limited: dict[str, set[str]],
    limits: Limits,
    survivor_of: dict[str, str],
    sighting: Sighting,
    keys: tuple[str, ...],
    apart: ApartPairs,
) -> str:
    ordered = sorted(found, key=lambda p: survivor_rank(p, limited))
    survivor = ordered[0]
    for other in ordered[1:]:
        reason = refusal_reason(limited[survivor], limited.get(other, set()), limits)
        if reason is None and apart.between(survivor, other):
            reason = RefusalReason.NOT_SAME_PERSON
        if reason is not None:
            result.refused.append(Refusal((survivor, other), sighting.event_id, keys, reason))
            continue
        merge = Merge(survivor=survivor, merged=other, event_id=sighting.event_id, keys=keys)
        survivor_of[other] = survivor
        apart.join(survivor, other)
        limited[survivor] |= limited.pop(other, set())
        if other not in result.new_profiles:
            result.merges.append(merge)
    return survivor
