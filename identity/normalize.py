"""Identifier normalisation with no I/O: the form under which identifiers are matched."""

import re
import unicodedata
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Checked:
    """A validated identifier: its graph key, or the reason it cannot be one."""

    key: str | None
    reason: str | None = None


def check_email(value: object) -> Checked:
    """Returns the graph key of an email (syntax checked, no DNS), or why it is invalid.

    The address is trimmed and casefolded for matching; the value as observed
    stays in the traits.
    """
    if not isinstance(value, str) or not value.strip():
        return Checked(None, "not a string" if not isinstance(value, str) else "empty")
    try:
        valid = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        return Checked(None, str(exc))
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


def check_phone(value: object, *, region: str = "US") -> Checked:
    """Returns the graph key of a phone number in E.164, or why it is invalid.

    Numbers without a country code are read in `region`.
    """
    if not isinstance(value, str | int) or isinstance(value, bool):
        return Checked(None, "not a string")
    try:
        number = phonenumbers.parse(str(value), region)
    except phonenumbers.NumberParseException as exc:
        return Checked(None, str(exc))
    if not phonenumbers.is_valid_number(number):
        return Checked(None, "not a valid number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Checked(f"phone:{e164}")


def email_key(value: object) -> str | None:
    """Returns the graph key of an email, or None if it is not usable as an identifier."""
    return check_email(value).key


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
