"""Trait rules with no I/O: key and value checks, type coercion, and precedence."""

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from profiles.errors import (
    InvalidCatalogEntry,
    InvalidObservation,
    InvalidTraitKey,
    InvalidTraitValue,
)
from profiles.models import JsonValue, Observation, TraitDefinition, TraitType, TraitValue

KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SOURCE_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@/-]{0,127}$")
MAX_DEPTH = 8
MAX_VALUE_BYTES = 16 * 1024

# Highest precedence first. `admin` edits win; first-party sources (`*`) outrank
# bought or fetched data, which only fills gaps unless a trait says otherwise.
DEFAULT_RANKING: tuple[str, ...] = ("admin", "*", "enrichment:*")


def check_key(key: object) -> str:
    """Returns the key if it is a valid trait key; raises `InvalidTraitKey` naming it if not."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise InvalidTraitKey(
            f"trait key {key!r} is invalid: keys start with a letter or underscore and hold "
            "only letters, digits and underscores, at most 128 characters (nest inside the "
            "value, not the key)"
        )
    return key


def _check_nested(key: str, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidTraitValue(f"trait {key!r} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for inner, item in value.items():
            if not isinstance(inner, str) or inner.startswith("$") or "." in inner or "\0" in inner:
                raise InvalidTraitValue(
                    f"trait {key!r} holds the key {inner!r}; keys inside values must be strings "
                    "that do not start with '$' and contain no '.'"
                )
            _check_nested(key, item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_nested(key, item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidTraitValue(f"trait {key!r} holds a non-finite number")
    elif not isinstance(value, str | int | float | bool | datetime | type(None)):
        raise InvalidTraitValue(f"trait {key!r} holds a {type(value).__name__}, not JSON")


def check_value(key: str, value: JsonValue) -> JsonValue:
    """Returns the value if it is within the depth and size bounds; raises naming the key."""
    _check_nested(key, value, 1)
    size = len(json.dumps(value, default=str).encode())
    if size > MAX_VALUE_BYTES:
        raise InvalidTraitValue(
            f"trait {key!r} is {size} bytes; a value may be at most {MAX_VALUE_BYTES} bytes"
        )
    return value


def to_utc_ms(moment: datetime) -> datetime:
    """Returns the instant in UTC truncated to milliseconds, the precision MongoDB keeps.

    Naive datetimes are read as UTC.
    """
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return aware.replace(microsecond=aware.microsecond // 1000 * 1000)


def parse_datetime(text: str) -> datetime:
    """Returns the instant an ISO 8601 string names; raises ValueError if it names none."""
    return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))


def _coerce_number(value: JsonValue) -> int | float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, int | float):
        number: int | float = value
    elif isinstance(value, str):
        number = float(value.strip())
        if number.is_integer() and "." not in value and "e" not in value.lower():
            number = int(number)
    else:
        raise ValueError("not a number")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


_TRUE = {"true", "yes", "1", "y", "on"}
_FALSE = {"false", "no", "0", "n", "off"}


def _coerce_boolean(value: JsonValue) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("not a boolean")


def _coerce(type_: TraitType, value: JsonValue) -> JsonValue:
    match type_:
        case TraitType.STRING:
            if isinstance(value, str):
                return value
            if isinstance(value, int | float) and not isinstance(value, bool):
                return str(value)
            raise ValueError("not a string")
        case TraitType.NUMBER:
            return _coerce_number(value)
        case TraitType.BOOLEAN:
            return _coerce_boolean(value)
        case TraitType.DATETIME:
            if isinstance(value, datetime):
                return to_utc_ms(value)
            if isinstance(value, str):
                return to_utc_ms(parse_datetime(value))
            raise ValueError("not an ISO 8601 date-time")
        case TraitType.STRING_LIST:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
            raise ValueError("not a list of strings")
        case TraitType.OBJECT:
            if isinstance(value, dict):
                return value
            raise ValueError("not an object")


def coerce(definition: TraitDefinition, value: JsonValue) -> JsonValue:
    """Returns the value converted to the declared type; raises `InvalidTraitValue` naming it.

    `null` is always accepted: it records that the trait was cleared.
    """
    if value is None:
        return None
    try:
        return _coerce(definition.type, value)
    except (ValueError, TypeError) as exc:
        raise InvalidTraitValue(
            f"trait {definition.key!r} is declared {definition.type.value} but got "
            f"{json.dumps(value, default=str)[:80]} ({exc})"
        ) from None


def check_observation(
    observation: Observation, catalog: Mapping[str, TraitDefinition]
) -> Observation:
    """Returns the observation with a checked key, a bounded and coerced value, and a UTC time."""
    key = check_key(observation.key)
    if not isinstance(observation.source, str) or not SOURCE_PATTERN.match(observation.source):
        raise InvalidObservation(f"trait {key!r} has an invalid source {observation.source!r}")
    if not isinstance(observation.observed_at, datetime):
        raise InvalidObservation(f"trait {key!r} has no observation time")
    value = check_value(key, observation.value)
    definition = catalog.get(key)
    if definition is not None:
        value = coerce(definition, value)
    return Observation(
        key=key,
        value=value,
        observed_at=to_utc_ms(observation.observed_at),
        source=observation.source,
        origin=observation.origin,
    )


def check_source_pattern(pattern: str) -> str:
    """Returns a precedence pattern (`admin`, `enrichment:*`, `*`) if valid; raises if not."""
    name = pattern[:-1] if pattern.endswith("*") else pattern
    if pattern != "*" and not SOURCE_PATTERN.match(name.rstrip(":") or "-"):
        raise InvalidCatalogEntry(
            f"precedence pattern {pattern!r} is invalid: use a source name, a prefix "
            "followed by '*', or '*'"
        )
    return pattern


def _specificity(pattern: str, source: str) -> tuple[int, int] | None:
    if pattern == source:
        return (2, len(pattern))
    if pattern.endswith("*") and source.startswith(pattern[:-1]):
        return (1, len(pattern))
    return None


@dataclass(frozen=True)
class Precedence:
    """A ranking of source patterns, highest first, globally and per trait.

    A pattern is a source name (`admin`), a prefix glob (`enrichment:*`) or `*`.
    A source takes the rank of the most specific pattern it matches; a source no
    pattern matches ranks below all of them.
    """

    ranking: tuple[str, ...] = DEFAULT_RANKING
    per_trait: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def rank(self, key: str, source: str) -> int:
        """Returns the source's rank for this trait: 0 is the highest."""
        ranking = self.per_trait.get(key, self.ranking)
        best: tuple[tuple[int, int], int] | None = None
        for index, pattern in enumerate(ranking):
            specificity = _specificity(pattern, source)
            if specificity is not None and (best is None or specificity > best[0]):
                best = (specificity, index)
        return len(ranking) if best is None else best[1]

    def with_catalog(self, catalog: Iterable[TraitDefinition]) -> "Precedence":
        """Returns this precedence with the catalog's per-trait rankings added."""
        per_trait = dict(self.per_trait)
        per_trait.update({d.key: d.precedence for d in catalog if d.precedence})
        return Precedence(self.ranking, per_trait)


def _canonical(value: JsonValue) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def order_key(precedence: Precedence, key: str, candidate: TraitValue) -> tuple[Any, ...]:
    """Returns a sort key under which the winning candidate comes first.

    Precedence first, then the newest observation. Exact ties fall back to the
    source and value so that the outcome never depends on arrival order.
    """
    return (
        precedence.rank(key, candidate.source),
        -to_utc_ms(candidate.observed_at).timestamp(),
        candidate.source,
        _canonical(candidate.value),
    )


def winner(precedence: Precedence, key: str, candidates: Iterable[TraitValue]) -> TraitValue:
    """Returns the candidate that holds the trait's current value."""
    return min(candidates, key=lambda c: order_key(precedence, key, c))


def current_traits(
    precedence: Precedence, observations: Iterable[Observation]
) -> dict[str, TraitValue]:
    """Returns the current value of every trait the observations speak of."""
    by_key: dict[str, list[TraitValue]] = {}
    for o in observations:
        by_key.setdefault(o.key, []).append(TraitValue(o.value, o.observed_at, o.source))
    return {key: winner(precedence, key, values) for key, values in by_key.items()}


def merge_into_current(
    precedence: Precedence,
    current: Mapping[str, TraitValue],
    observations: Sequence[Observation],
) -> dict[str, TraitValue]:
    """Returns the traits whose current value the observations change, with their new value."""
    changed: dict[str, TraitValue] = {}
    for key, proposed in current_traits(precedence, observations).items():
        existing = current.get(key)
        best = proposed if existing is None else winner(precedence, key, [existing, proposed])
        if best != existing:
            changed[key] = best
    return changed
