"""Identifier validation and normalisation, with no I/O."""

import pytest

from identity.normalize import (
    Blocklist,
    Status,
    canonical_email_key,
    check_email,
    check_phone,
    identity_key,
    normalise_name,
    normalise_postcode,
    street_number,
)


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("Ada@Example.com", "email:ada@example.com"),
        ("  ada@EXAMPLE.COM ", "email:ada@example.com"),
        ("ada.lovelace+news@gmail.com", "email:ada.lovelace+news@gmail.com"),
    ],
)
def test_emails_are_trimmed_and_casefolded_for_matching(given: str, key: str) -> None:
    assert check_email(given).key == key


@pytest.mark.parametrize("given", ["ada", "ada@", "@example.com", "a b@example.com", "", 42])
def test_invalid_emails_are_never_keys_and_say_why(given: object) -> None:
    checked = check_email(given)
    assert checked.key is None
    assert checked.reason


def test_gmail_dots_and_tags_fold_into_a_separate_canonical_key() -> None:
    assert canonical_email_key("Ada.Lovelace+news@googlemail.com") == (
        "email_canonical:adalovelace@gmail.com"
    )
    assert canonical_email_key("ada+x@outlook.com") == "email_canonical:ada@outlook.com"
    assert canonical_email_key("ada.l+x@example.com") is None


@pytest.mark.parametrize(
    ("given", "region", "key"),
    [
        ("+1 415 555 2671", "US", "phone:+14155552671"),
        ("(415) 555-2671", "US", "phone:+14155552671"),
        ("020 7946 0018", "GB", "phone:+442079460018"),
    ],
)
def test_phones_become_e164_in_the_default_region(given: str, region: str, key: str) -> None:
    assert check_phone(given, region=region).key == key


@pytest.mark.parametrize("given", ["12", "+1 000 000 0000", "call me", True])
def test_invalid_phones_are_never_keys(given: object) -> None:
    assert check_phone(given, region="US").key is None


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("Dr. Ada  LOVELACE", "ada lovelace"),
        ("Mr John Smith Jr.", "john smith"),
        ("Zoë O'Brien-Ndiaye", "zoë obrien ndiaye"),
        ("ＡＤＡ", "ada"),
    ],
)
def test_names_lose_titles_suffixes_case_and_punctuation(given: str, normal: str) -> None:
    assert normalise_name(given) == normal


def test_postcodes_and_street_numbers() -> None:
    assert normalise_postcode(" sw1a 1aa ") == "SW1A1AA"
    assert normalise_postcode("10115") == "10115"
    assert street_number("221b Baker Street") == "221B"
    assert street_number("Baker Street") is None


def test_identity_keys_of_other_kinds_are_trimmed_only() -> None:
    assert identity_key("user_id", " U-1 ") == "user_id:U-1"


def test_invalid_emails_are_counted_by_a_short_reason() -> None:
    assert check_email("ada.example.com").reason == "missing_at"
    assert check_email("ada@").reason == "missing_domain"
    assert check_email("ada@localhost").reason == "bad_domain"
    assert check_email("a..b@example.com").reason == "bad_local_part"
    assert check_email(" ").reason == "empty"
    assert check_email(42).reason == "not_a_string"


def test_invalid_phones_are_counted_by_a_short_reason() -> None:
    assert check_phone("12").reason == "too_short"
    assert check_phone("call me").reason == "not_a_number"
    assert check_phone("1" * 30).reason == "too_long"
    assert check_phone("+1 555 000 0000").reason == "invalid_number"


def test_the_blocklist_blocks_values_of_any_kind_and_whole_keys() -> None:
    blocklist = Blocklist(["null", "Test@Test.com", "phone:+10000000000"])
    assert blocklist.blocks("user_id:NULL")
    assert blocklist.blocks("email:test@test.com")
    assert blocklist.blocks("phone:+10000000000")
    assert not blocklist.blocks("user_id:+10000000000")
    checked = blocklist.check(check_email("TEST@test.com"))
    assert (checked.key, checked.status, checked.reason) == (None, Status.BLOCKED, "blocked")
