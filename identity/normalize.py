"""Identifier normalisation with no I/O: the form under which identifiers are matched."""

import re
import unicodedata

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


def email_key(value: object) -> str | None:
    """Returns the graph key of an email, or None if it is not usable as an identifier."""
    if not isinstance(value, str):
        return None
    text = unicodedata.normalize("NFKC", value).strip().casefold()
    local, at, domain = text.rpartition("@")[0], "@" in text, text.rpartition("@")[2]
    if not at or not local or "." not in domain or " " in text or len(text) > 254:
        return None
    return f"email:{text}"


def phone_key(value: object) -> str | None:
    """Returns the graph key of a phone number, or None if it is not usable as an identifier."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    text = str(value).strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    if not 7 <= len(digits) <= 15:
        return None
    return f"phone:{'+' if text.startswith('+') else ''}{digits}"
