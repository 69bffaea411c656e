"""Identity graph planning: merge protection, limits and shared identifiers, with no I/O."""

from datetime import UTC, datetime, timedelta

from identity.graph import Limits, RefusalReason, Sighting, plan

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _sighting(n: int, *keys: str) -> Sighting:
    return Sighting(f"e{n:03d}", T0 + timedelta(minutes=n), keys)


def test_an_event_linking_two_anonymous_profiles_merges_them() -> None:
    result = plan(
        [_sighting(1, "anonymous_id:a", "anonymous_id:b")],
        {"anonymous_id:a": "prf_1", "anonymous_id:b": "prf_2"},
        {},
    )
    assert [(m.survivor, m.merged) for m in result.merges] == [("prf_1", "prf_2")]


def test_profiles_with_different_user_ids_are_never_merged() -> None:
    result = plan(
        [_sighting(1, "email:x@example.com", "phone:+14155550100")],
        {"email:x@example.com": "prf_1", "phone:+14155550100": "prf_2"},
        {"prf_1": frozenset({"user_id:u1"}), "prf_2": frozenset({"user_id:u2"})},
    )
    assert result.merges == []
    assert [r.reason for r in result.refused] == [RefusalReason.DIFFERENT_USER_IDS]


def test_a_second_user_id_on_a_known_device_gets_its_own_profile() -> None:
    result = plan(
        [_sighting(1, "user_id:u2", "anonymous_id:a")],
        {"anonymous_id:a": "prf_1"},
        {"prf_1": frozenset({"user_id:u1"})},
    )
    own = result.assignment["e001"]
    assert own != "prf_1"
    assert result.claims == {"user_id:u2": own}
    assert result.contested == {"anonymous_id:a": {"user_id:u2"}}


def test_a_profile_links_no_more_emails_than_its_limit() -> None:
    limits = Limits(per_kind={"user_id": 1, "email": 2, "phone": 2})
    result = plan(
        [_sighting(1, "user_id:u1", "email:c@example.com")],
        {"user_id:u1": "prf_1"},
        {"prf_1": frozenset({"user_id:u1", "email:a@example.com", "email:b@example.com"})},
        limits=limits,
    )
    assert result.assignment["e001"] == "prf_1"
    assert "email:c@example.com" not in result.claims
    assert result.over_limit == {"email:c@example.com": "prf_1"}


def test_a_merge_that_would_exceed_a_limit_is_refused() -> None:
    limits = Limits(per_kind={"user_id": 1, "email": 2, "phone": 2})
    result = plan(
        [_sighting(1, "anonymous_id:a", "anonymous_id:b")],
        {"anonymous_id:a": "prf_1", "anonymous_id:b": "prf_2"},
        {
            "prf_1": frozenset({"email:a@example.com", "email:b@example.com"}),
            "prf_2": frozenset({"email:c@example.com"}),
        },
        limits=limits,
    )
    assert result.merges == []
    assert [r.reason for r in result.refused] == [RefusalReason.TOO_MANY_IDENTIFIERS]


def test_a_shared_key_links_nothing() -> None:
    owners = {"anonymous_id:kiosk": "prf_device", "user_id:u1": "prf_1"}
    result = plan(
        [_sighting(1, "anonymous_id:kiosk", "user_id:u1"), _sighting(2, "anonymous_id:kiosk")],
        owners,
        {"prf_1": frozenset({"user_id:u1"})},
        shared=frozenset({"anonymous_id:kiosk"}),
    )
    assert result.merges == []
    assert result.refused == []
    assert result.assignment == {"e001": "prf_1", "e002": "prf_device"}
    assert result.claims == {}
