"""The console's page logic with no I/O: agreement, the default survivor, evidence, search."""

from datetime import UTC, datetime, timedelta

import pytest

from app.admin import views
from app.admin.session import safe_next
from identity.errors import InvalidIdentifier
from profiles.models import Identifier, Profile, TraitValue

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def trait(value: object, source: str = "web") -> TraitValue:
    return TraitValue(value, T0, source)


def profile(pid: str, *identifiers: tuple[str, str]) -> Profile:
    return Profile(
        id=pid,
        identifiers=[Identifier(kind, value) for kind, value in identifiers],
        traits={},
        stats={},
        computed={},
        segments=[],
        consent={},
        version=1,
        created_at=T0,
        updated_at=T0,
    )


def test_agreement_ignores_case_and_spacing_and_names_one_sided_traits() -> None:
    rows = views.compare_traits(
        {"name": trait("Ada  Lovelace"), "email": trait("a@x.com"), "plan": trait("pro")},
        {"name": trait("ada lovelace"), "email": trait("b@x.com"), "tier": trait(3)},
    )
    assert {r.key: r.agreement for r in rows} == {
        "name": views.Agreement.SAME,
        "email": views.Agreement.DIFFERENT,
        "plan": views.Agreement.ONLY_A,
        "tier": views.Agreement.ONLY_B,
    }
    # The traits the matcher reads come first.
    assert [r.key for r in rows][:2] == ["name", "email"]
    assert {r.label for r in rows} == {"Same", "Different", "Only A", "Only B"}


def test_structured_values_agree_whatever_their_key_order() -> None:
    [row] = views.compare_traits(
        {"address": trait({"city": "London", "zip": "W1"})},
        {"address": trait({"zip": "W1", "city": "London"})},
    )
    assert row.agreement is views.Agreement.SAME


def test_the_default_survivor_holds_the_user_id_else_is_the_older() -> None:
    older, newer = "prf_01AAAAAAAAAAAAAAAAAAAAAAAA", "prf_01BBBBBBBBBBBBBBBBBBBBBBBB"
    plain = profile(older, ("email", "a@x.com"))
    with_user = profile(newer, ("user_id", "u1"))
    assert views.default_survivor(plain, with_user) == newer
    assert views.default_survivor(with_user, plain) == newer
    assert views.default_survivor(profile(newer), profile(older)) == older


def test_evidence_is_strongest_first_in_words_and_skips_malformed_entries() -> None:
    rows = views.evidence_rows(
        [
            {"field": "city", "level": "different", "weight": -1.0},
            {"field": "name", "level": "exact", "weight": 5.0},
            {"field": "bad", "level": "x", "weight": "heavy"},
            {"field": "nan", "level": "x", "weight": float("nan")},
        ]
    )
    assert [(r.field, r.verdict) for r in rows] == [
        ("name", "for a match"),
        ("city", "against a match"),
    ]
    assert rows[0].signed == "+5.00"
    assert rows[0].odds == "32× likelier if the same person"
    assert rows[1].odds == "2.0× likelier if different people"


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("ada@example.com", {"email:ada@example.com"}),
        ("  Email:ADA@Example.com ", {"email:ada@example.com"}),
        ("user_id:u1", {"user_id:u1"}),
        ("phone:+44 20 7946 0958", {"phone:+442079460958"}),
        ("phone:(415) 555-2671", {"phone:+14155552671"}),
    ],
)
def test_identifier_searches_use_the_graphs_keys(text: str, keys: set[str]) -> None:
    query = views.parse_query(text, phone_region="US")
    assert isinstance(query, views.IdentifierQuery)
    assert query.keys == keys


def test_other_searches_are_names_or_profile_ids() -> None:
    assert views.parse_query("Ada Lovelace", phone_region="US") == views.NameQuery("Ada Lovelace")
    assert views.parse_query("Dr. Who: the return", phone_region="US") == views.NameQuery(
        "Dr. Who: the return"
    )
    pid = "prf_01JD0000000000000000000000"
    assert views.parse_query(pid, phone_region="US") == views.ProfileIdQuery(pid)


def test_an_unusable_identifier_is_refused() -> None:
    with pytest.raises(InvalidIdentifier, match="not a valid phone number"):
        views.parse_query("phone:12", phone_region="US")


def test_age_names_the_largest_unit() -> None:
    assert views.age(T0, T0 + timedelta(seconds=30)) == "just now"
    assert views.age(T0, T0 + timedelta(minutes=5)) == "5 min"
    assert views.age(T0, T0 + timedelta(hours=30)) == "1 d"


def test_event_cursors_round_trip_and_malformed_ones_are_ignored() -> None:
    row = views.event_row({"_id": "evt_1", "timestamp": T0, "type": "track", "event": "Clicked"})
    assert views.parse_event_cursor(views.event_cursor(row)) == (T0, "evt_1")
    assert views.parse_event_cursor("garbage") is None
    assert views.parse_event_cursor("not-a-date|evt_1") is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/admin/profiles/prf_1?x=1", "/admin/profiles/prf_1?x=1"),
        ("", "/admin"),
        ("//evil.test", "/admin"),
        ("https://evil.test/admin", "/admin"),
        ("/admin\\@evil.test", "/admin"),
        ("/adminx", "/admin"),
        ("/admin?status=merged", "/admin?status=merged"),
    ],
)
def test_login_only_returns_to_console_paths(target: str, expected: str) -> None:
    assert safe_next(target) == expected
