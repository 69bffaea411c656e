"""The profile service: the one write path for traits, and point-in-time reads."""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo.asynchronous.client_session import AsyncClientSession

from profiles import traits
from profiles.errors import ProfileNotFound
from profiles.ids import new_profile_id
from profiles.models import Identifier, Observation, Profile, TraitDefinition
from profiles.store import HistoryRow, ProfileStore, TraitUpdate, history_id

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 20
MAX_MERGE_CHAIN = 16


@dataclass(frozen=True)
class ApplyResult:
    """What applying a batch of observations did."""

    recorded: int  # observations new to history
    duplicates: int  # observations history already held
    profiles_changed: int  # profiles whose current traits changed
    traits_changed: int


def utcnow() -> datetime:
    """Returns the current instant in UTC, at MongoDB's millisecond precision."""
    return traits.to_utc_ms(datetime.now(UTC))


class ProfileService:
    """Applies observations under precedence rules and answers reads about profiles."""

    def __init__(self, store: ProfileStore, *, precedence: traits.Precedence | None = None) -> None:
        self.store = store
        self.precedence = precedence or traits.Precedence()

    async def create_profile(
        self, identifiers: Sequence[Identifier] = (), *, now: datetime | None = None
    ) -> str:
        """Creates an empty profile and returns its id."""
        profile_id = new_profile_id()
        await self.store.insert_profiles([(profile_id, identifiers)], now=now or utcnow())
        return profile_id

    async def apply_observations(
        self, profile_id: str, observations: Sequence[Observation]
    ) -> ApplyResult:
        """Records observations of one profile and updates its current traits."""
        return await self.apply_batch({profile_id: observations})

    async def apply_batch(
        self, batch: Mapping[str, Sequence[Observation]], *, now: datetime | None = None
    ) -> ApplyResult:
        """Records observations of many profiles and updates their current traits.

        Every observation is checked before anything is written, so a bad one
        leaves no trace. History is appended first: if the process dies before
        the profiles are updated, applying the batch again completes it.
        """
        recorded_at = now or utcnow()
        keys = {o.key for items in batch.values() for o in items if isinstance(o.key, str)}
        catalog = await self.store.catalog_entries(keys) if keys else {}
        checked = {
            profile_id: [traits.check_observation(o, catalog) for o in items]
            for profile_id, items in batch.items()
            if items
        }
        if not checked:
            return ApplyResult(0, 0, 0, 0)
        precedence = self.precedence.with_catalog(catalog.values())

        existing = await self.store.current_traits(checked, keys)
        missing = set(checked) - set(existing)
        if missing:
            raise ProfileNotFound(f"no profile with id {sorted(missing)[0]!r}")

        rows = [
            HistoryRow(history_id(pid, o), pid, o, recorded_at)
            for pid, items in checked.items()
            for o in items
        ]
        recorded = await self.store.append_history(rows)

        profiles_changed = traits_changed = 0
        pending = checked
        for _attempt in range(MAX_CONFLICT_RETRIES):
            updates = []
            for pid, items in pending.items():
                version, current = existing[pid]
                changed = traits.merge_into_current(precedence, current, items)
                if changed:
                    updates.append(TraitUpdate(pid, version, changed))
            if await self.store.update_traits(updates, now=recorded_at):
                profiles_changed += len(updates)
                traits_changed += sum(len(u.changed) for u in updates)
                break
            # Another writer moved some profile on. Recomputing is idempotent, so
            # re-read the whole batch and apply again what is still missing.
            existing = await self.store.current_traits(pending, keys)
        else:
            raise RuntimeError("profiles kept changing while observations were applied")
        return ApplyResult(recorded, len(rows) - recorded, profiles_changed, traits_changed)

    async def get(
        self,
        profile_id: str,
        *,
        follow_merges: bool = True,
        trait_keys: Sequence[str] | None = None,
    ) -> Profile:
        """Returns the profile, following merges to the survivor; raises `ProfileNotFound`.

        With `trait_keys`, only those traits are read.
        """
        seen: set[str] = set()
        current = profile_id
        while True:
            profile = await self.store.get(current, trait_keys=trait_keys)
            if profile is None:
                raise ProfileNotFound(f"no profile with id {profile_id!r}")
            if not follow_merges or profile.merged_into is None:
                return profile
            seen.add(current)
            if profile.merged_into in seen or len(seen) >= MAX_MERGE_CHAIN:
                return profile
            current = profile.merged_into

    async def profile_as_of(self, profile_id: str, at: datetime) -> Profile:
        """Returns the profile as Kindred knew it at `at`, rebuilt from history.

        Only observations that were both true and recorded by then count, so a
        segment evaluated for a past instant cannot see the future.
        """
        at = traits.to_utc_ms(at)
        profile = await self.get(profile_id)
        if profile.created_at > at:
            raise ProfileNotFound(f"profile {profile_id!r} did not exist at {at.isoformat()}")
        history = await self.store.history_for(profile.id, observed_until=at, recorded_until=at)
        catalog = await self.store.catalog_entries({o.key for o in history})
        precedence = self.precedence.with_catalog(catalog.values())
        profile.traits = traits.current_traits(precedence, history)
        return profile

    async def rebuild_traits(
        self, profile_id: str, *, session: AsyncClientSession | None = None
    ) -> None:
        """Recomputes a profile's current traits from its whole history (after a merge).

        In a transaction (`session`), a concurrent writer makes the transaction
        retry rather than this loop.
        """
        for _attempt in range(MAX_CONFLICT_RETRIES):
            profile = await self.store.get(profile_id, session=session)
            if profile is None:
                raise ProfileNotFound(f"no profile with id {profile_id!r}")
            history = await self.store.history_for(profile_id, session=session)
            catalog = await self.store.catalog_entries({o.key for o in history}, session=session)
            precedence = self.precedence.with_catalog(catalog.values())
            current = traits.current_traits(precedence, history)
            if current == profile.traits:
                return
            if await self.store.replace_traits(
                profile_id,
                current,
                expected_version=profile.version,
                now=utcnow(),
                session=session,
            ):
                return
        raise RuntimeError(f"profile {profile_id} kept changing while its traits were rebuilt")

    async def define_trait(self, definition: TraitDefinition) -> TraitDefinition:
        """Declares a trait in the catalog, checking the declaration first."""
        traits.check_key(definition.key)
        for pattern in definition.precedence or ():
            traits.check_source_pattern(pattern)
        await self.store.put_catalog_entry(definition, now=utcnow())
        return definition
