"""What the console's pages show, built from domain objects with no I/O."""

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from identity import graph
from identity.errors import InvalidIdentifier
from identity.matching import GIVEN_NAME_TRAITS, MATCH_TRAITS, SURNAME_TRAITS
from identity.normalize import KIND_PATTERN, check_email, identity_key, phone_key
from profiles.models import Profile, TraitValue

ENRICHMENT_PREFIX = "enrichment:"
# Profile ids are `prf_` and 26 Crockford base-32 characters (profiles/ids.py).
PROFILE_ID = re.compile(r"^prf_[0-9A-HJKMNP-TV-Z]{26}$")
# A value in a table cell stays readable; the full value is one click away.
MAX_CELL_CHARS = 200


class Agreement(StrEnum):
    """How one trait of two profiles compares."""

    SAME = "same"
    DIFFERENT = "different"
    ONLY_A = "only-a"
    ONLY_B = "only-b"


# An icon and a word for each, so agreement never rests on colour alone.
AGREEMENT_LABELS: Mapping[Agreement, tuple[str, str]] = {
    Agreement.SAME: ("=", "Same"),
    Agreement.DIFFERENT: ("≠", "Different"),
    Agreement.ONLY_A: ("◧", "Only A"),
    Agreement.ONLY_B: ("◨", "Only B"),
}


@dataclass(frozen=True)
class TraitComparison:
    """One trait of two profiles, side by side."""

    key: str
    a: TraitValue | None
    b: TraitValue | None
    agreement: Agreement

    @property
    def icon(self) -> str:
        """Returns the agreement's symbol."""
        return AGREEMENT_LABELS[self.agreement][0]

    @property
    def label(self) -> str:
        """Returns the agreement in a word or two."""
        return AGREEMENT_LABELS[self.agreement][1]


def comparable(value: Any) -> str:
    """Returns the form two trait values are compared in: text trimmed and casefolded."""
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    return json.dumps(value, sort_keys=True, default=str)


def _trait_order(key: str) -> tuple[int, str]:
    # The traits the matcher reads come first, in its order: they decide a review.
    try:
        return MATCH_TRAITS.index(key), key
    except ValueError:
        return len(MATCH_TRAITS), key


def compare_traits(
    a: Mapping[str, TraitValue], b: Mapping[str, TraitValue]
) -> list[TraitComparison]:
    """Returns every trait of either profile with how the two compare, identifying ones first."""
    rows = []
    for key in sorted(a.keys() | b.keys(), key=_trait_order):
        left, right = a.get(key), b.get(key)
        if left is None:
            agreement = Agreement.ONLY_B
        elif right is None:
            agreement = Agreement.ONLY_A
        elif comparable(left.value) == comparable(right.value):
            agreement = Agreement.SAME
        else:
            agreement = Agreement.DIFFERENT
        rows.append(TraitComparison(key, left, right, agreement))
    return rows


def default_survivor(a: Profile, b: Profile) -> str:
    """Returns the id of the profile the merge rule keeps: a user id's holder, else the oldest."""
    keys = {p.id: {f"{i.kind}:{i.value}" for i in p.identifiers} for p in (a, b)}
    return min((a.id, b.id), key=lambda pid: graph.survivor_rank(pid, keys))


def display_value(value: Any) -> str:
    """Returns a trait value as text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return when(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def shortened(text: str, limit: int = MAX_CELL_CHARS) -> str:
    """Returns the text cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_value(profile: Profile, keys: Iterable[str]) -> str | None:
    for key in keys:
        trait = profile.traits.get(key)
        if trait is not None and trait.value not in (None, ""):
            return display_value(trait.value)
    return None


def display_name(profile: Profile) -> str | None:
    """Returns the person's name from the `name` trait, else given name and surname."""
    name = _first_value(profile, ("name",))
    if name is not None:
        return name
    parts = [_first_value(profile, GIVEN_NAME_TRAITS), _first_value(profile, SURNAME_TRAITS)]
    return " ".join(p for p in parts if p) or None


def display_email(profile: Profile) -> str | None:
    """Returns the `email` trait, else the first email the profile is known by."""
    email = _first_value(profile, ("email",))
    if email is not None:
        return email
    return next((i.value for i in profile.identifiers if i.kind == "email"), None)


def is_enrichment(source: str) -> bool:
    """Tells whether a trait came from a third-party enrichment source."""
    return source.startswith(ENRICHMENT_PREFIX)


@dataclass(frozen=True)
class EvidenceRow:
    """One field of a match explanation: how it compared and how much that weighed."""

    field: str
    level: str
    weight: float  # log2 Bayes factor: above 0 speaks for a match

    @property
    def verdict(self) -> str:
        """Returns which way the field speaks, in words."""
        if self.weight > 0:
            return "for a match"
        if self.weight < 0:
            return "against a match"
        return "neutral"

    @property
    def signed(self) -> str:
        """Returns the weight with its sign, e.g. `+5.20`."""
        return f"{self.weight:+.2f}".replace("-", "−")

    @property
    def odds(self) -> str:
        """Returns the weight as odds, e.g. `37× likelier if the same person`."""
        factor = 2 ** abs(self.weight)
        if self.weight == 0:
            return "no change"
        amount = f"{factor:,.0f}" if factor >= 10 else f"{factor:.1f}"
        side = "the same person" if self.weight > 0 else "different people"
        return f"{amount}× likelier if {side}"


def evidence_rows(evidence: Sequence[Mapping[str, Any]]) -> list[EvidenceRow]:
    """Returns a suggestion's evidence as rows, strongest first; malformed entries are skipped."""
    rows = []
    for item in evidence:
        weight = item.get("weight")
        if not isinstance(weight, int | float) or isinstance(weight, bool):
            continue
        if not math.isfinite(weight):
            continue
        rows.append(EvidenceRow(str(item.get("field", "?")), str(item.get("level", "")), weight))
    return sorted(rows, key=lambda r: -abs(r.weight))


def age(since: datetime, now: datetime) -> str:
    """Returns how long ago `since` was, in its largest unit: `4 min`, `3 h`, `12 d`."""
    seconds = max(0.0, (now - since).total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return "just now"


def when(at: datetime | None) -> str:
    """Returns an instant in UTC to the second, e.g. `2026-01-01 09:30:00 UTC`."""
    if at is None:
        return ""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class IdentifierQuery:
    """A search by identifier: the graph keys it may be stored under."""

    keys: frozenset[str]
    label: str


@dataclass(frozen=True)
class NameQuery:
    """A search by name."""

    text: str


@dataclass(frozen=True)
class ProfileIdQuery:
    """A search that is a profile id."""

    profile_id: str


Query = IdentifierQuery | NameQuery | ProfileIdQuery


def parse_query(text: str, *, phone_region: str) -> Query:
    """Returns what a search box holds: `kind:value`, a bare email, a profile id, or a name.

    Raises `InvalidIdentifier` for an identifier no profile could be stored under.
    """
    text = text.strip()
    if PROFILE_ID.match(text):
        return ProfileIdQuery(text)
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    if sep and KIND_PATTERN.match(kind):
        return _identifier_query(kind, value.strip(), phone_region=phone_region)
    if "@" in text and " " not in text:
        return _identifier_query("email", text, phone_region=phone_region)
    return NameQuery(text)


def _identifier_query(kind: str, value: str, *, phone_region: str) -> IdentifierQuery:
    if kind == "phone":
        # The graph keeps phones in E.164; `+44 20 7946 0958` must find `+442079460958`.
        key = phone_key(value, region=phone_region)
        if key is None:
            raise InvalidIdentifier(f"{value!r} is not a valid phone number")
        return IdentifierQuery(frozenset({key}), f"phone {value}")
    keys = {identity_key(kind, value)}
    if kind == "email":
        # The builder links emails in email-validator's form; try it too.
        checked = check_email(value).key
        if checked is not None:
            keys.add(checked)
    return IdentifierQuery(frozenset(keys), f"{kind} {value}")


@dataclass(frozen=True)
class EventRow:
    """One event of a profile's timeline."""

    id: str
    at: datetime
    type: str
    name: str
    source: str
    details: str


def event_row(doc: Mapping[str, Any]) -> EventRow:
    """Returns an event document as a timeline row."""
    details = doc.get("properties") or doc.get("traits") or {}
    return EventRow(
        id=str(doc["_id"]),
        at=doc["timestamp"],
        type=str(doc.get("type", "")),
        name=str(doc.get("event") or doc.get("name") or ""),
        source=str(doc.get("source", "")),
        details=shortened(display_value(details)) if details else "",
    )


def event_cursor(row: EventRow) -> str:
    """Returns the cursor of the page after a timeline row."""
    return f"{row.at.astimezone(UTC).isoformat()}|{row.id}"


def parse_event_cursor(cursor: str) -> tuple[datetime, str] | None:
    """Returns the (timestamp, id) an event cursor names, or None if it is malformed."""
    at, sep, event_id = cursor.partition("|")
    if not sep or not event_id:
        return None
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)), event_id
