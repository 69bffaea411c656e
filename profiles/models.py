"""The profile store's plain data: observations, trait values, catalog entries, profiles."""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

JsonValue = Any  # a JSON-compatible value: None, bool, int, float, str, list, dict


class TraitType(StrEnum):
    """Declared trait types; values are checked and coerced on write."""

    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    STRING_LIST = "string_list"
    OBJECT = "object"


@dataclass(frozen=True)
class Observation:
    """One claim that a trait had a value at a time, from a source.

    `origin` says which write produced it (`event:<id>`, `import:<job>`, `admin:<key>`).
    """

    key: str
    value: JsonValue
    observed_at: datetime
    source: str
    origin: str = ""


@dataclass(frozen=True)
class TraitValue:
    """The current value of a trait, with when it was true and where it came from."""

    value: JsonValue
    observed_at: datetime
    source: str


@dataclass(frozen=True)
class TraitDefinition:
    """A catalog entry: a known trait's type, meaning, PII flag and source precedence."""

    key: str
    type: TraitType
    description: str = ""
    pii: bool = False
    precedence: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Identifier:
    """An identifier a profile is known by, such as `email` / `ada@example.com`."""

    kind: str
    value: str


@dataclass
class Profile:
    """The current view of one person."""

    id: str
    identifiers: list[Identifier]
    traits: dict[str, TraitValue]
    stats: dict[str, Any]
    computed: dict[str, Any]
    segments: list[str]
    consent: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    merged_into: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
