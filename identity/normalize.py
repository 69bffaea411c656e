"""Identifier normalisation with no I/O: the form under which identifiers are matched."""

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from identity.errors import InvalidIdentifier

KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_VALUE_LENGTH = 512
CASE_INSENSITIVE_KINDS = frozenset({"email"})


def check_kind(kind: object) -> str:
    """Returns the identifier kind if valid (`email`, `user_id`, `crm_id`…); raises if not."""
    if not isinstance(kind, str) or not KIND_PATTERN.match(kind):
        raise InvalidIdentifier(
            f"identifier kind {kind!r} is invalid: lowercase letters, digits and underscores, "
            "starting with a letter, at most 32 characters"
        )
    return kind


def normalise(kind: str, value: object) -> str:
    """Returns the matching form of an identifier value: NFKC, trimmed, casefolded for emails."""
    check_kind(kind)
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise InvalidIdentifier(f"identifier {kind!r} must be a string")
    text = unicodedata.normalize("NFKC", str(value)).strip()
    if not text or len(text) > MAX_VALUE_LENGTH or "\0" in text:
        raise InvalidIdentifier(f"identifier {kind!r} must be 1 to {MAX_VALUE_LENGTH} characters")
    return text.casefold() if kind in CASE_INSENSITIVE_KINDS else text


def identity_key(kind: str, value: object) -> str:
    """Returns the identity graph key `kind:normalised value`."""
    return f"{kind}:{normalise(kind, value)}"


class Status(StrEnum):
    """Whether an observed email or phone can serve as an identity key."""

    VALID = "valid"
    INVALID = "invalid"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class Checked:
    """A validated identifier: its graph key, or why it cannot be one.

    `reason` is a short code to count by (`missing_at`, `too_short`, `blocked`…).
    """

    key: str | None
    reason: str | None = None

    @property
    def status(self) -> Status:
        """Returns `valid`, `invalid` or `blocked`."""
        if self.key is not None:
            return Status.VALID
        return Status.BLOCKED if self.reason == BLOCKED else Status.INVALID


BLOCKED = "blocked"

# email-validator explains in sentences that name the input; reports count by code.
_EMAIL_REASONS = (
    ("must have an @-sign", "missing_at"),
    ("something after the @-sign", "missing_domain"),
    ("something before the @-sign", "missing_local_part"),
    ("after the @-sign", "bad_domain"),
    ("domain", "bad_domain"),
    ("before the @-sign", "bad_local_part"),
    ("periods in a row", "bad_local_part"),
    ("too long", "too_long"),
)


def _email_reason(message: str) -> str:
    lowered = message.casefold()
    return next((code for text, code in _EMAIL_REASONS if text.casefold() in lowered), "syntax")


def check_email(value: object) -> Checked:
    """Returns the graph key of an email (syntax checked, no DNS), or why it is invalid.

    The address is trimmed and casefolded for matching; the value as observed
    stays in the traits.
    """
    if not isinstance(value, str):
        return Checked(None, "not_a_string")
    if not value.strip():
        return Checked(None, "empty")
    try:
        valid = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        return Checked(None, _email_reason(str(exc)))
    return Checked(f"email:{valid.normalized.casefold()}")


# Providers that deliver `local+tag@` to `local@`; Gmail also ignores dots.
_PLUS_TAG_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "icloud.com",
        "me.com",
        "fastmail.com",
        "protonmail.com",
        "proton.me",
    }
)
_DOTLESS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def canonical_email_key(value: object) -> str | None:
    """Returns a provider-aware key (`email_canonical:…`) where the provider folds addresses.

    It is a separate identifier kind: the address itself is never replaced.
    """
    checked = check_email(value)
    if checked.key is None:
        return None
    local, _, domain = checked.key.removeprefix("email:").rpartition("@")
    if domain not in _PLUS_TAG_DOMAINS:
        return None
    local = local.split("+", 1)[0]
    if domain in _DOTLESS_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"email_canonical:{local}@{domain}"


_PHONE_REASONS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "bad_country_code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not_a_number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too_short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too_short",
    phonenumbers.NumberParseException.TOO_LONG: "too_long",
}


_LENGTH_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too_short",
    phonenumbers.ValidationResult.TOO_LONG: "too_long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "invalid_length",
}


def check_phone(value: object, *, region: str = "US") -> Checked:
    """Returns the graph key of a phone number in E.164, or why it is invalid.

    Numbers without a country code are read in `region`.
    """
    if not isinstance(value, str | int) or isinstance(value, bool):
        return Checked(None, "not_a_string")
    try:
        number = phonenumbers.parse(str(value), region)
    except phonenumbers.NumberParseException as exc:
        return Checked(None, _PHONE_REASONS.get(exc.error_type, "not_a_number"))
    if not phonenumbers.is_valid_number(number):
        length = phonenumbers.is_possible_number_with_reason(number)
        if length in _LENGTH_REASONS:
            return Checked(None, _LENGTH_REASONS[length])
        return Checked(None, "invalid_number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Checked(f"phone:{e164}")


def phone_key(value: object, *, region: str = "US") -> str | None:
    """Returns the graph key of a phone number, or None if it is not usable as an identifier."""
    return check_phone(value, region=region).key


_TITLES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "rev"})
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd", "md", "esq"})


def normalise_name(value: object) -> str:
    """Returns a name's matching form: NFKC, casefolded, no titles, suffixes or punctuation."""
    if not isinstance(value, str):
        return ""
    text = unicodedata.normalize("NFKC", value).casefold()
    words = re.sub(r"[^\w\s'-]", " ", text).replace("-", " ").replace("'", "").split()
    while words and words[0] in _TITLES:
        words = words[1:]
    while words and words[-1] in _SUFFIXES:
        words = words[:-1]
    return " ".join(words)


def normalise_postcode(value: object) -> str:
    """Returns a postcode's matching form: upper case, no spaces or dashes."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return ""
    return re.sub(r"[\s-]", "", unicodedata.normalize("NFKC", str(value))).upper()


def street_number(address: object) -> str | None:
    """Returns the house number of a street address, if it has one."""
    if not isinstance(address, str):
        return None
    found = re.search(r"\b(\d+[a-zA-Z]?)\b", unicodedata.normalize("NFKC", address))
    return found.group(1).upper() if found else None


# Values that forms, test scripts and broken SDKs send for "no value": linking on
# them would merge strangers into one megaprofile.
DEFAULT_BLOCKED = (
    "null",
    "none",
    "nil",
    "undefined",
    "unknown",
    "anonymous",
    "guest",
    "n/a",
    "na",
    "-",
    "0",
    "1",
    "test",
    "[object object]",
    "00000000-0000-0000-0000-000000000000",
    "test@test.com",
    "test@example.com",
    "email@example.com",
    "user@example.com",
    "example@example.com",
    "noreply@example.com",
    "no-reply@example.com",
    "a@a.com",
    "phone:+10000000000",
    "phone:+11111111111",
    "phone:+11234567890",
)


class Blocklist:
    """Identifier values never used as identity keys.

    An entry is a value, blocked for every kind (`null`, `test@test.com`), or a
    whole key, blocked for one kind (`phone:+10000000000`). Both compare
    casefolded.
    """

    def __init__(self, entries: Iterable[str] = DEFAULT_BLOCKED) -> None:
        self.entries = frozenset(e.strip().casefold() for e in entries)

    def blocks(self, key: str) -> bool:
        """Returns whether the key (`kind:value`) or its value is blocked."""
        folded = key.casefold()
        return folded in self.entries or folded.partition(":")[2] in self.entries

    def check(self, checked: Checked) -> Checked:
        """Returns the check, turned to `blocked` if its key is on the list."""
        if checked.key is not None and self.blocks(checked.key):
            return Checked(None, BLOCKED)
        return checked
