"""The one write path for traits, against the real database."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import monitoring
from pymongo.asynchronous.database import AsyncDatabase

from profiles.errors import InvalidTraitKey, InvalidTraitValue, ProfileNotFound
from profiles.models import Observation, TraitDefinition, TraitType
from profiles.service import ProfileService
from profiles.store import PROFILES, TRAIT_HISTORY, ProfileStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def service(db: AsyncDatabase[dict[str, object]]) -> ProfileService:
    return ProfileService(ProfileStore(db))


def obs(key: str, value: object, hours: float, source: str = "web") -> Observation:
    return Observation(key, value, T0 + timedelta(hours=hours), source, origin="test")


async def test_current_value_and_its_time_and_source_are_kept(service: ProfileService) -> None:
    pid = await service.create_profile()
    await service.apply_observations(pid, [obs("city", "Paris", 1), obs("plan", "pro", 2, "crm")])
    profile = await service.get(pid)
    assert profile.traits["city"].value == "Paris"
    assert profile.traits["city"].observed_at == T0 + timedelta(hours=1)
    assert profile.traits["plan"].source == "crm"


async def test_late_arriving_older_value_does_not_overwrite(service: ProfileService) -> None:
    pid = await service.create_profile()
    await service.apply_observations(pid, [obs("city", "Lyon", 5)])
    await service.apply_observations(pid, [obs("city", "Paris", 1)])
    assert (await service.get(pid)).traits["city"].value == "Lyon"


async def test_enrichment_fills_gaps_but_never_overrides_first_party(
    service: ProfileService,
) -> None:
    pid = await service.create_profile()
    await service.apply_observations(pid, [obs("city", "Paris", 1)])
    await service.apply_observations(
        pid,
        [obs("city", "Lyon", 9, "enrichment:acme"), obs("income", "50-75k", 9, "enrichment:acme")],
    )
    profile = await service.get(pid)
    assert profile.traits["city"].value == "Paris"
    assert profile.traits["income"].value == "50-75k"


async def test_every_observation_stays_in_history(
    service: ProfileService, db: AsyncDatabase[dict[str, object]]
) -> None:
    pid = await service.create_profile()
    await service.apply_observations(pid, [obs("city", "Lyon", 5)])
    await service.apply_observations(pid, [obs("city", "Paris", 1)])
    history = await service.store.history_for(pid, key="city")
    assert sorted(o.value for o in history) == ["Lyon", "Paris"]
    row = await db[TRAIT_HISTORY].find_one({"value": "Paris"})
    assert row is not None
    assert row["origin"] == "test"
    assert row["recorded_at"] >= row["observed_at"]


async def test_applying_the_same_observations_twice_changes_nothing(
    service: ProfileService, db: AsyncDatabase[dict[str, object]]
) -> None:
    pid = await service.create_profile()
    batch = [obs("city", "Paris", 1), obs("plan", "pro", 1)]
    first = await service.apply_observations(pid, batch)
    before = await db[PROFILES].find_one({"_id": pid})
    second = await service.apply_observations(pid, batch)
    after = await db[PROFILES].find_one({"_id": pid})
    assert (first.recorded, first.traits_changed) == (2, 2)
    assert (second.recorded, second.duplicates, second.traits_changed) == (0, 2, 0)
    assert before == after
    assert await db[TRAIT_HISTORY].count_documents({"profile_id": pid}) == 2


async def test_a_bad_key_in_a_batch_writes_nothing(
    service: ProfileService, db: AsyncDatabase[dict[str, object]]
) -> None:
    good, other = await service.create_profile(), await service.create_profile()
    with pytest.raises(InvalidTraitKey, match="a.b"):
        await service.apply_batch({good: [obs("city", "Paris", 1)], other: [obs("a.b", 1, 1)]})
    assert await db[TRAIT_HISTORY].count_documents({}) == 0
    assert (await service.get(good)).traits == {}


async def test_declared_types_are_coerced_and_violations_refused(service: ProfileService) -> None:
    pid = await service.create_profile()
    await service.define_trait(TraitDefinition("age", TraitType.NUMBER, "Age in years"))
    await service.apply_observations(pid, [obs("age", "41", 1)])
    assert (await service.get(pid)).traits["age"].value == 41
    with pytest.raises(InvalidTraitValue, match="'age' is declared number"):
        await service.apply_observations(pid, [obs("age", "forty", 2)])


async def test_catalog_precedence_for_one_trait(service: ProfileService) -> None:
    pid = await service.create_profile()
    await service.define_trait(
        TraitDefinition("company_size", TraitType.NUMBER, precedence=("enrichment:*", "*"))
    )
    await service.apply_observations(
        pid, [obs("company_size", 10, 5, "crm"), obs("company_size", 250, 1, "enrichment:acme")]
    )
    assert (await service.get(pid)).traits["company_size"].value == 250


async def test_unknown_profile_is_refused(service: ProfileService) -> None:
    with pytest.raises(ProfileNotFound):
        await service.apply_observations("prf_missing", [obs("city", "Paris", 1)])


async def test_point_in_time_read_shows_what_was_known_then(service: ProfileService) -> None:
    pid = await service.create_profile(now=T0)
    await service.apply_batch({pid: [obs("city", "Paris", 1)]}, now=T0 + timedelta(hours=1))
    await service.apply_batch({pid: [obs("city", "Lyon", 3)]}, now=T0 + timedelta(hours=3))
    # Observed at 2h but only learnt at 10h: not known at 5h.
    await service.apply_batch({pid: [obs("plan", "pro", 2)]}, now=T0 + timedelta(hours=10))
    at_2h = await service.profile_as_of(pid, T0 + timedelta(hours=2))
    at_5h = await service.profile_as_of(pid, T0 + timedelta(hours=5))
    now = await service.profile_as_of(pid, T0 + timedelta(hours=11))
    assert at_2h.traits["city"].value == "Paris"
    assert at_5h.traits["city"].value == "Lyon"
    assert "plan" not in at_5h.traits
    assert now.traits["plan"].value == "pro"
    with pytest.raises(ProfileNotFound):
        await service.profile_as_of(pid, T0 - timedelta(hours=1))


class _CommandCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_batch_for_many_profiles_costs_a_constant_number_of_round_trips(
    mongodb_uri: str, database_name: str, db: AsyncDatabase[dict[str, object]]
) -> None:
    from app.mongo import create_client

    counter = _CommandCounter()
    client = create_client(mongodb_uri, listeners=[counter])
    try:
        service = ProfileService(ProfileStore(client[database_name]))
        ids = [await service.create_profile() for _ in range(50)]
        counter.commands.clear()
        await service.apply_batch({pid: [obs(f"k{i}", i, 1) for i in range(10)] for pid in ids})
        commands = list(counter.commands)
    finally:
        await client.close()
    # catalog read, current traits read, history insert, one bulk update.
    assert commands == ["find", "find", "insert", "update"]


async def test_concurrent_writers_to_one_profile_lose_nothing(service: ProfileService) -> None:
    import asyncio

    pid = await service.create_profile()
    await asyncio.gather(
        *(service.apply_observations(pid, [obs(f"k{i}", i, i)]) for i in range(20))
    )
    profile = await service.get(pid)
    assert {k: t.value for k, t in profile.traits.items()} == {f"k{i}": i for i in range(20)}
    assert profile.version == 20


permutable = st.lists(
    st.builds(
        Observation,
        key=st.sampled_from(["city", "plan"]),
        value=st.sampled_from(["a", "b", "c"]),
        observed_at=st.integers(0, 3).map(lambda h: T0 + timedelta(hours=h)),
        source=st.sampled_from(["web", "admin", "enrichment:acme"]),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=permutable, data=st.data())
async def test_stored_traits_do_not_depend_on_arrival_order(
    service: ProfileService, items: list[Observation], data: st.DataObject
) -> None:
    order = data.draw(st.permutations(items))
    a, b = await service.create_profile(), await service.create_profile()
    for o in items:
        await service.apply_observations(a, [o])
    await service.apply_observations(b, order)
    traits_a = (await service.get(a)).traits
    traits_b = (await service.get(b)).traits
    assert traits_a == traits_b
