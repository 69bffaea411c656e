"""Planning identity resolution for a batch of events, with no I/O.

Each event carries identity keys (`user_id:…`, `email:…`, `phone:…`,
`anonymous_id:…`). The plan says which profile each event belongs to, which
keys to claim for which profile, which new profiles to create, and which
existing profiles to merge because one event showed they are the same person.
"""

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from profiles.ids import new_id

# Highest first: a new profile is named after its strongest key.
KIND_PRIORITY = ("user_id", "email", "phone", "anonymous_id")


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
class Refusal:
    """Profiles one event linked that hold different user ids, so were not merged."""

    profiles: tuple[str, ...]
    event_id: str
    keys: tuple[str, ...]


@dataclass
class Plan:
    """What resolving a batch will write."""

    assignment: dict[str, str] = field(default_factory=dict)  # event id -> profile id
    claims: dict[str, str] = field(default_factory=dict)  # key -> profile id
    new_profiles: dict[str, datetime] = field(default_factory=dict)  # id -> first seen
    merges: list[Merge] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


def plan(
    sightings: Iterable[Sighting],
    owners: Mapping[str, str],
    user_ids: Mapping[str, frozenset[str]],
) -> Plan:
    """Returns the plan for the sightings, in time order, given the graph's current owners.

    `user_ids` holds the `user_id` keys of every profile in `owners`. Two
    profiles holding different user ids are never merged automatically, and a
    profile never takes a second user id; such events stay with the profile of
    their strongest key and the refusal is reported.
    """
    result = Plan()
    owner = dict(owners)
    # A profile missing from `user_ids` was claimed for but not created yet (by
    # another worker, or one that crashed): it holds no user id so far.
    uids: dict[str, set[str]] = {pid: set() for pid in owner.values()}
    uids.update({pid: set(keys) for pid, keys in user_ids.items()})
    survivor_of: dict[str, str] = {}

    def find(pid: str) -> str:
        while pid in survivor_of:
            pid = survivor_of[pid]
        return pid

    for sighting in sorted(sightings, key=lambda s: (s.timestamp, s.event_id)):
        keys = by_priority(sighting.keys)
        if not keys:
            continue
        found = {find(owner[k]) for k in keys if k in owner}
        user_key = next((k for k in keys if kind_of(k) == "user_id"), None)
        if user_key is not None:
            # Someone else's profile reached through a shared email or device is not
            # this user's: it is reported, and the user gets a profile of their own.
            other_users = {p for p in found if uids.get(p) and uids[p] != {user_key}}
            if other_users:
                result.refused.append(Refusal(tuple(sorted(other_users)), sighting.event_id, keys))
            found -= other_users
        if not found:
            pid = deterministic_profile_id(keys[0], sighting.timestamp)
            result.new_profiles[pid] = sighting.timestamp
            uids.setdefault(pid, set())
        else:
            pid = _join(result, found, uids, survivor_of, sighting, keys)
        for key in keys:
            if key in owner:
                continue
            if kind_of(key) == "user_id" and uids[pid] - {key}:
                continue  # at most one user id per profile
            owner[key] = pid
            result.claims[key] = pid
            if kind_of(key) == "user_id":
                uids[pid].add(key)
        result.assignment[sighting.event_id] = pid

    # Profiles merged away inside this plan hand everything to their survivor.
    result.assignment = {e: find(p) for e, p in result.assignment.items()}
    result.claims = {k: find(p) for k, p in result.claims.items()}
    for merged in list(result.new_profiles):
        if merged in survivor_of:
            del result.new_profiles[merged]
    return result


def _survivor_rank(pid: str, uids: Mapping[str, set[str]]) -> tuple[bool, str]:
    # The documented rule: a profile with a user id wins, else the oldest (ids sort by age).
    return (not uids.get(pid), pid)


def _join(
    result: Plan,
    found: set[str],
    uids: dict[str, set[str]],
    survivor_of: dict[str, str],
    sighting: Sighting,
    keys: tuple[str, ...],
) -> str:
    ordered = sorted(found, key=lambda p: _survivor_rank(p, uids))
    survivor = ordered[0]
    for other in ordered[1:]:
        if uids[survivor] and uids.get(other) and uids[survivor] != uids[other]:
            result.refused.append(Refusal((survivor, other), sighting.event_id, keys))
            continue
        merge = Merge(survivor=survivor, merged=other, event_id=sighting.event_id, keys=keys)
        survivor_of[other] = survivor
        uids[survivor] |= uids.pop(other, set())
        if other not in result.new_profiles:
            result.merges.append(merge)
    return survivor
