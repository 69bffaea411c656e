"""Trait rules without I/O: keys, values, coercion and precedence."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiles import traits
from profiles.errors import InvalidTraitKey, InvalidTraitValue
from profiles.models import Observation, TraitDefinition, TraitType, TraitValue

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "key", ["$where", "a.b", "1abc", "", "a-b", "é", "x" * 129, "traits.$set", " a"]
)
def test_bad_keys_are_refused_by_name(key: str) -> None:
    with pytest.raises(InvalidTraitKey, match="trait key"):
        traits.check_key(key)


@pytest.mark.parametrize("key", ["a", "_a", "first_name", "A1", "x" * 128])
def test_good_keys_pass(key: str) -> None:
    assert traits.check_key(key) == key


@pytest.mark.parametrize(
    "value",
    [
        {"$gt": 1},
        {"a": {"b.c": 1}},
        [{"$where": "1"}],
        float("nan"),
        {"a": object()},
    ],
)
def test_values_that_could_reach_mongodb_as_operators_are_refused(value: object) -> None:
    with pytest.raises(InvalidTraitValue, match="'prefs'"):
        traits.check_value("prefs", value)


def test_values_deeper_than_eight_levels_are_refused() -> None:
    deep: object = "leaf"
    for _ in range(8):
        deep = [deep]
    with pytest.raises(InvalidTraitValue, match="deeper"):
        traits.check_value("deep", deep)
    assert traits.check_value("ok", [[[[[[["leaf"]]]]]]]) is not None


def test_values_over_16_kb_are_refused() -> None:
    with pytest.raises(InvalidTraitValue, match="bytes"):
        traits.check_value("bio", "x" * 17_000)


@pytest.mark.parametrize(
    ("type_", "given", "expected"),
    [
        (TraitType.NUMBER, "42", 42),
        (TraitType.NUMBER, "4.5", 4.5),
        (TraitType.STRING, 7, "7"),
        (TraitType.BOOLEAN, "yes", True),
        (TraitType.BOOLEAN, 0, False),
        (TraitType.DATETIME, "2026-03-01T10:00:00Z", datetime(2026, 3, 1, 10, tzinfo=UTC)),
        (TraitType.STRING_LIST, ["a", "b"], ["a", "b"]),
        (TraitType.OBJECT, {"a": 1}, {"a": 1}),
        (TraitType.NUMBER, None, None),
    ],
)
def test_declared_types_are_coerced(type_: TraitType, given: object, expected: object) -> None:
    assert traits.coerce(TraitDefinition("t", type_), given) == expected


@pytest.mark.parametrize(
    ("type_", "given"),
    [
        (TraitType.NUMBER, "lots"),
        (TraitType.NUMBER, True),
        (TraitType.BOOLEAN, "maybe"),
        (TraitType.DATETIME, "next tuesday"),
        (TraitType.STRING_LIST, ["a", 1]),
        (TraitType.OBJECT, [1]),
        (TraitType.STRING, {"a": 1}),
    ],
)
def test_values_that_cannot_be_coerced_are_refused_naming_key_and_type(
    type_: TraitType, given: object
) -> None:
    with pytest.raises(InvalidTraitValue, match=f"'age' is declared {type_.value}"):
        traits.coerce(TraitDefinition("age", type_), given)


def test_default_precedence_puts_admin_over_first_party_over_enrichment() -> None:
    p = traits.Precedence()
    assert p.rank("city", "admin") < p.rank("city", "web") < p.rank("city", "enrichment:acme")


def test_per_trait_precedence_overrides_the_global_ranking() -> None:
    p = traits.Precedence(per_trait={"company_size": ("enrichment:*", "*")})
    assert p.rank("company_size", "enrichment:acme") < p.rank("company_size", "crm")
    assert p.rank("city", "enrichment:acme") > p.rank("city", "crm")


def test_higher_precedence_wins_even_when_older() -> None:
    old_first_party = TraitValue("Paris", T0, "web")
    new_enriched = TraitValue("Lyon", T0 + timedelta(days=30), "enrichment:acme")
    assert traits.winner(traits.Precedence(), "city", [new_enriched, old_first_party]) == (
        old_first_party
    )


def test_an_older_observation_never_overwrites_a_newer_one_of_the_same_rank() -> None:
    current = {"city": TraitValue("Lyon", T0 + timedelta(hours=1), "web")}
    late = [Observation("city", "Paris", T0, "app")]
    assert traits.merge_into_current(traits.Precedence(), current, late) == {}


observations = st.lists(
    st.builds(
        Observation,
        key=st.sampled_from(["city", "plan", "age"]),
        value=st.one_of(st.integers(0, 3), st.sampled_from(["a", "b"]), st.none()),
        observed_at=st.integers(0, 5).map(lambda h: T0 + timedelta(hours=h)),
        source=st.sampled_from(["web", "crm", "admin", "enrichment:acme"]),
    ),
    max_size=25,
)


@given(observations, st.randoms(use_true_random=False), st.integers(1, 5))
def test_any_order_and_batching_of_observations_gives_the_same_traits(
    items: list[Observation], rnd: object, chunk: int
) -> None:
    p = traits.Precedence()
    expected = traits.current_traits(p, items)
    shuffled = list(items)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    current: dict[str, TraitValue] = {}
    for start in range(0, len(shuffled), chunk):
        current.update(traits.merge_into_current(p, current, shuffled[start : start + chunk]))
    assert current == expected
