"""The segment rule language with no I/O: parsing, MongoDB compilation, Python evaluation.

A definition is versioned JSON, `{"version": 1, "rule": <condition>}`, validated
here with clear errors that name the JSON path of the problem. One parsed rule
has two evaluators that must agree exactly (invariant 5):

- `to_pipeline` compiles it to aggregation stages over `profiles` (with
  `$lookup`s into `events`) for a full evaluation;
- `matches` evaluates it in Python over one profile and its applied events, for
  real-time evaluation after an event.

The semantics both implement are written down in `docs/segments.md`. In short:
a value is compared only with a value of the same kind (number, string,
boolean, date); a missing or null value is "missing"; `ne` and `not_in` are the
negations of `eq` and `in`, so they match missing values, as MongoDB's `$ne`
and `$nin` do; every other op never matches a missing value.

User input never reaches MongoDB as an operator or a dotted path: keys, property
names and purposes are checked against strict patterns (so each is one plain
path segment), and every user value is put into the pipeline as
`{"$literal": value}`.
"""

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from http import HTTPStatus
from typing import Annotated, Any, Literal, Self, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from profiles.errors import InvalidTraitKey, KindredError
from profiles.traits import check_key, parse_datetime, to_utc_ms

LANGUAGE_VERSION = 1

MAX_DEPTH = 8
MAX_CONDITIONS = 50
MAX_WHERE = 20
MAX_LIST = 1000
MAX_STRING = 1024
MAX_NAME = 256
MAX_COUNT = 10_000
MAX_DURATION = timedelta(days=36_500)
_INT64 = 2**63
_MS = timedelta(milliseconds=1)
# `next_change` evaluates the rule at most this many candidate instants exactly;
# past that it returns the next candidate, which is early, never late.
_MAX_PROBES = 64

# The event log's collection. It belongs to `app/eventlog.py`, which a domain
# package may not import, so the name is repeated here (and is a parameter).
EVENTS = "events"

# Names of the temporary fields the pipeline adds to each profile and removes again.
_TEMP_PREFIX = "__kr"


class InvalidSegmentRule(KindredError):
    """A segment definition breaks the rule language; the message names the JSON path."""

    code = "invalid_segment_rule"
    status = HTTPStatus.UNPROCESSABLE_ENTITY

    def __init__(self, message: str, *, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        # (path, reason) pairs, for callers that show each problem next to its field.
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)


class Op(StrEnum):
    """Comparison operators of trait, stat, computed and property conditions."""

    EQ = "eq"
    NE = "ne"
    IN = "in"
    NOT_IN = "not_in"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    BETWEEN = "between"
    EXISTS = "exists"
    MISSING = "missing"
    CONTAINS = "contains"
    PREFIX = "prefix"


_NO_VALUE = frozenset({Op.EXISTS, Op.MISSING})
_LIST_OPS = frozenset({Op.IN, Op.NOT_IN})
_ORDERED = frozenset({Op.GT, Op.GTE, Op.LT, Op.LTE})


class Stat(StrEnum):
    """The profile stats a rule may read (`event_counts` is left out on purpose)."""

    EVENT_COUNT = "event_count"
    PAGE_VIEWS = "page_views"
    SCREEN_VIEWS = "screen_views"
    ORDERS = "orders"
    REVENUE_CENTS = "revenue_cents"
    EMAIL_OPENS = "email_opens"
    EMAIL_CLICKS = "email_clicks"
    FIRST_SEEN = "first_seen"
    LAST_SEEN = "last_seen"
    FIRST_ORDER_AT = "first_order_at"
    LAST_ORDER_AT = "last_order_at"
    LAST_EMAIL_OPEN_AT = "last_email_open_at"
    LAST_EMAIL_CLICK_AT = "last_email_click_at"

    @property
    def is_counter(self) -> bool:
        """Counters read as 0 when nothing was counted yet; the others are dates."""
        return not self.value.endswith(("_seen", "_at"))


class EventType(StrEnum):
    """Event types of the tracking spec."""

    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    IDENTIFY = "identify"
    GROUP = "group"
    ALIAS = "alias"


_NAMED_TYPES = frozenset({EventType.TRACK, EventType.PAGE, EventType.SCREEN})


class Direction(StrEnum):
    """Which side of the anchor a `since` condition counts."""

    AFTER = "after"
    BEFORE = "before"


class ConsentStatus(StrEnum):
    """Stored consent statuses."""

    GRANTED = "granted"
    DENIED = "denied"
    REVOKED = "revoked"


class Channel(StrEnum):
    """Channels a `contactable` condition knows."""

    EMAIL = "email"
    SMS = "sms"


@dataclass(frozen=True)
class _ChannelTraits:
    address: str
    status: str
    unsubscribed: str
    consent: str


# What "contactable" reads per channel.
CHANNELS: Mapping[Channel, _ChannelTraits] = {
    Channel.EMAIL: _ChannelTraits("email", "email_status", "unsubscribed", "email_marketing"),
    Channel.SMS: _ChannelTraits("phone", "phone_status", "sms_unsubscribed", "sms_marketing"),
}


# --- durations and values ---------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def _duration_seconds(text: str, *, signed: bool) -> int:
    sign = 1
    body = text
    if signed:
        if not text or text[0] not in "+-":
            raise ValueError(
                f"relative date {text!r} needs a sign: '-30d' is 30 days ago, '+1h' in an hour"
            )
        sign = -1 if text[0] == "-" else 1
        body = text[1:]
    number, unit = body[:-1], body[-1:]
    if not (1 <= len(number) <= 6 and number.isascii() and number.isdigit() and unit in _UNITS):
        example = "'-30d'" if signed else "'30d'"
        raise ValueError(
            f"{text!r} is not a duration: write a whole number and a unit "
            f"(s, m, h, d or w), such as {example}"
        )
    seconds = int(number) * _UNITS[unit]
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is longer than {MAX_DURATION.days} days")
    return sign * seconds


def parse_duration(text: object) -> timedelta:
    """Returns the positive length a duration such as `30d` names; raises ValueError if none."""
    if not isinstance(text, str):
        raise ValueError(f"a duration is a string such as '30d', not {_show(text)}")
    seconds = _duration_seconds(text, signed=False)
    if seconds == 0:
        raise ValueError(f"duration {text!r} must be longer than zero")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class AbsoluteDate:
    """A fixed instant, written `{"date": "2024-05-01T00:00:00Z"}`."""

    at: datetime

    def to_json(self) -> dict[str, str]:
        """Returns the JSON form."""
        text = self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"date": text}


@dataclass(frozen=True)
class RelativeDate:
    """An instant relative to evaluation time, written `{"relative": "-30d"}`."""

    text: str

    @property
    def offset(self) -> timedelta:
        """Returns how far from now the instant is (negative: in the past)."""
        return timedelta(seconds=_duration_seconds(self.text, signed=True))

    def to_json(self) -> dict[str, str]:
        """Returns the JSON form."""
        return {"relative": self.text}


Scalar: TypeAlias = bool | int | float | str | AbsoluteDate | RelativeDate
Operand: TypeAlias = Scalar | tuple[Scalar, ...] | None
Value: TypeAlias = bool | int | float | str | datetime


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_date(raw: object) -> AbsoluteDate:
    if isinstance(raw, datetime):
        return AbsoluteDate(to_utc_ms(raw))
    if isinstance(raw, str):
        try:
            return AbsoluteDate(to_utc_ms(parse_datetime(raw)))
        except ValueError:
            pass
    raise ValueError(f"{_show(raw)} is not an ISO 8601 date-time such as '2024-05-01T00:00:00Z'")


def _parse_scalar(raw: object, *, iso_strings: bool) -> Scalar:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int):
        if not -_INT64 <= raw < _INT64:
            raise ValueError(f"{_show(raw)} is outside the 64-bit integer range")
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ValueError("numbers must be finite")
        return raw
    if isinstance(raw, str):
        if len(raw) > MAX_STRING:
            raise ValueError(f"strings may be at most {MAX_STRING} characters")
        return _parse_date(raw) if iso_strings else raw
    if isinstance(raw, datetime):
        return AbsoluteDate(to_utc_ms(raw))
    if isinstance(raw, Mapping) and set(raw) == {"date"}:
        return _parse_date(raw["date"])
    if isinstance(raw, Mapping) and set(raw) == {"relative"}:
        text = raw["relative"]
        if not isinstance(text, str):
            raise ValueError(f"relative date {_show(text)} must be a string such as '-30d'")
        _duration_seconds(text, signed=True)
        return RelativeDate(text)
    raise ValueError(
        f"{_show(raw)} is not a value: use a string, a number, a boolean, "
        '{"date": "<ISO 8601>"} or {"relative": "-30d"}'
    )


_Kind = Literal["number", "string", "bool", "date"]


def _rule_kind(value: Scalar) -> _Kind:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "date"


def _stored_kind(value: object) -> _Kind | None:
    """The kind of a stored value; None for missing, null, lists and objects."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "date"
    return None


def _out_of_order(low: Scalar, high: Scalar) -> bool:
    if isinstance(low, RelativeDate) and isinstance(high, RelativeDate):
        return low.offset > high.offset
    if isinstance(low, AbsoluteDate) and isinstance(high, AbsoluteDate):
        return low.at > high.at
    if isinstance(low, AbsoluteDate | RelativeDate) or isinstance(
        high, AbsoluteDate | RelativeDate
    ):
        return False  # one fixed, one moving: the order depends on the day
    return bool(low > high)  # type: ignore[operator]


def _parse_operand(op: Op, raw: object, *, only: _Kind | None = None) -> Operand:
    """Returns the checked value of a comparison; raises ValueError saying what is wrong.

    `only` restricts the kind of every value (stats hold only numbers or only
    dates); for dates, plain ISO strings are then read as dates.
    """
    iso = only == "date"
    if op in _NO_VALUE:
        if raw is not None:
            raise ValueError(f"op '{op}' takes no value")
        return None
    if raw is None:
        hint = "; to test for an absent value use op 'missing'" if op in (Op.EQ, Op.NE) else ""
        raise ValueError(f"op '{op}' needs a value{hint}")
    values: tuple[Scalar, ...]
    if op in _LIST_OPS or op == Op.BETWEEN:
        if not isinstance(raw, list | tuple):
            shape = "[low, high]" if op == Op.BETWEEN else f"a list of 1 to {MAX_LIST} values"
            raise ValueError(f"op '{op}' needs {shape}, not {_show(raw)}")
        if op == Op.BETWEEN and len(raw) != 2:
            raise ValueError(f"op 'between' needs [low, high], not {len(raw)} values")
        if not 1 <= len(raw) <= MAX_LIST:
            raise ValueError(f"op '{op}' needs a list of 1 to {MAX_LIST} values, not {len(raw)}")
        values = tuple(_parse_scalar(item, iso_strings=iso) for item in raw)
    else:
        values = (_parse_scalar(raw, iso_strings=iso),)
    kinds = {_rule_kind(v) for v in values}
    if only is not None and kinds != {only}:
        raise ValueError(f"this value must be a {only}, not {_show(raw)}")
    if op in _ORDERED or op == Op.BETWEEN:
        if "bool" in kinds:
            raise ValueError(f"op '{op}' compares numbers, strings or dates, not booleans")
        if len(kinds) > 1:
            raise ValueError("op 'between' needs a low and a high of the same kind")
    if op == Op.BETWEEN and _out_of_order(values[0], values[1]):
        raise ValueError(f"op 'between' needs low <= high, not {_show(raw)}")
    if op == Op.PREFIX and kinds != {"string"}:
        raise ValueError(f"op 'prefix' needs a string, not {_show(raw)}")
    return values if op in _LIST_OPS or op == Op.BETWEEN else values[0]


def _dump_scalar(value: Scalar) -> Any:
    return value.to_json() if isinstance(value, AbsoluteDate | RelativeDate) else value


def _dump_operand(value: Operand) -> Any:
    if isinstance(value, tuple):
        return [_dump_scalar(v) for v in value]
    return None if value is None else _dump_scalar(value)


# --- the language's models ---------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked_key(key: str) -> str:
    try:
        return check_key(key)
    except InvalidTraitKey as exc:
        raise ValueError(exc.message) from None


def _checked_name(text: str, what: str, *, limit: int = MAX_NAME) -> str:
    if not text:
        raise ValueError(f"{what} must not be empty")
    if len(text) > limit:
        raise ValueError(f"{what} may be at most {limit} characters")
    if "\0" in text:
        raise ValueError(f"{what} must not contain NUL")
    return text


_PURPOSE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class _Comparison(_Model):
    """The shared part of trait, stat, computed and property comparisons."""

    op: Op
    value: Annotated[Operand, Field(validate_default=True)] = None

    @field_validator("value", mode="plain")
    @classmethod
    def _check_value(cls, raw: Any, info: ValidationInfo) -> Operand:
        op = info.data.get("op")
        if op is None:  # the op itself is wrong, and that error is reported
            return None
        return _parse_operand(op, raw)

    @field_serializer("value")
    def _serialize_value(self, value: Operand) -> Any:
        return _dump_operand(value)


class TraitCondition(_Comparison):
    """Compares the current value of a trait."""

    type: Literal["trait"] = "trait"
    key: str

    @field_validator("key")
    @classmethod
    def _check_key(cls, key: str) -> str:
        return _checked_key(key)


class ComputedCondition(_Comparison):
    """Compares a computed trait (such as `rfm_group` or `cluster`)."""

    type: Literal["computed"] = "computed"
    key: str

    @field_validator("key")
    @classmethod
    def _check_key(cls, key: str) -> str:
        return _checked_key(key)


class StatCondition(_Model):
    """Compares a profile stat; counters read as 0 until something is counted."""

    type: Literal["stat"] = "stat"
    key: Stat
    op: Op
    value: Annotated[Operand, Field(validate_default=True)] = None

    @field_validator("op")
    @classmethod
    def _check_op(cls, op: Op, info: ValidationInfo) -> Op:
        key = info.data.get("key")
        if op in (Op.CONTAINS, Op.PREFIX):
            raise ValueError(f"op '{op}' does not apply to stats, which are numbers or dates")
        if key is not None and key.is_counter and op in _NO_VALUE:
            raise ValueError(
                f"stat '{key}' is a counter, which reads 0 until something is counted, "
                "so it is never missing; compare it with 0 instead"
            )
        return op

    @field_validator("value", mode="plain")
    @classmethod
    def _check_value(cls, raw: Any, info: ValidationInfo) -> Operand:
        key, op = info.data.get("key"), info.data.get("op")
        if key is None or op is None:
            return None
        return _parse_operand(op, raw, only="number" if key.is_counter else "date")

    @field_serializer("value")
    def _serialize_value(self, value: Operand) -> Any:
        return _dump_operand(value)


class WhereFilter(_Comparison):
    """Compares one property of an event."""

    property: str

    @field_validator("property")
    @classmethod
    def _check_property(cls, name: str) -> str:
        _checked_name(name, "a property name", limit=128)
        if "$" in name or "." in name:
            raise ValueError(
                f"property name {name!r} may not contain '$' or '.' (nested properties "
                "are not supported)"
            )
        return name


class Count(_Model):
    """Bounds on a number of events, both inclusive; no max means no upper bound."""

    min: StrictInt = Field(default=0, ge=0, le=MAX_COUNT)
    max: StrictInt | None = Field(default=None, ge=0, le=MAX_COUNT)

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self

    def admits(self, count: int) -> bool:
        """Returns whether a count is within the bounds."""
        return self.min <= count and (self.max is None or count <= self.max)

    @property
    def decisive(self) -> int:
        """Returns how many events are enough to decide; counting further changes nothing."""
        return self.min if self.max is None else max(self.min, self.max + 1)


AT_LEAST_ONE = Count(min=1)


class EventSelector(_Model):
    """Which events: a type, a name (track event, or page/screen name) and property filters.

    A name without a type means a track event. No name and no type means any event.
    """

    event_type: EventType | None = None
    name: str | None = None
    where: tuple[WhereFilter, ...] = Field(default=(), max_length=MAX_WHERE)

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("name") is not None and "event_type" not in data:
            return {**data, "event_type": EventType.TRACK}
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is None:
            return None
        _checked_name(name, "an event name")
        event_type = info.data.get("event_type")
        if event_type is not None and event_type not in _NAMED_TYPES:
            raise ValueError(f"'{event_type}' events have no name; leave out the name")
        return name

    def selects(self, event: "EventFacts", now: datetime) -> bool:
        """Returns whether an event is of this type and name and passes the filters."""
        return self.selects_kind(event) and all(
            _holds(event.properties.get(w.property), w.op, w.value, now) for w in self.where
        )

    def selects_kind(self, event: "EventFacts") -> bool:
        """Returns whether an event is of this type and name, filters aside."""
        if self.event_type is not None and event.type != self.event_type:
            return False
        return self.name is None or event.name == self.name


def _check_duration(text: str | None) -> str | None:
    if text is not None:
        parse_duration(text)
    return text


def _duration(text: str | None) -> timedelta | None:
    return None if text is None else parse_duration(text)


class EventCondition(EventSelector):
    """Counts the profile's events of a kind in a time window."""

    type: Literal["event"] = "event"
    count: Count = AT_LEAST_ONE
    within: str | None = None
    before: str | None = None

    @field_validator("within")
    @classmethod
    def _check_within(cls, within: str | None) -> str | None:
        return _check_duration(within)

    @field_validator("before")
    @classmethod
    def _check_before(cls, before: str | None, info: ValidationInfo) -> str | None:
        if before is None:
            return None
        length = parse_duration(before)
        within = info.data.get("within")
        if within is not None and length >= parse_duration(within):
            raise ValueError(
                f"'{before}' must be shorter than within ('{within}'), or the window is empty"
            )
        return before

    @property
    def within_delta(self) -> timedelta | None:
        """The window's length back from now, if bounded."""
        return _duration(self.within)

    @property
    def before_delta(self) -> timedelta | None:
        """How long ago the window ends, if not now."""
        return _duration(self.before)


class SinceCondition(_Model):
    """Counts `then` events after the last (or before the first) `anchor` event."""

    type: Literal["since"] = "since"
    anchor: EventSelector
    then: EventSelector
    elapsed: str | None = None
    direction: Direction = Direction.AFTER
    count: Count = AT_LEAST_ONE

    @field_validator("elapsed")
    @classmethod
    def _check_elapsed(cls, elapsed: str | None) -> str | None:
        return _check_duration(elapsed)

    @property
    def elapsed_delta(self) -> timedelta | None:
        """How long ago the anchor must be, at least."""
        return _duration(self.elapsed)


class SegmentCondition(_Model):
    """Membership of another segment, as stored on the profile."""

    type: Literal["segment"] = "segment"
    id: str
    member: StrictBool = True

    @field_validator("id")
    @classmethod
    def _check_id(cls, segment_id: str) -> str:
        if not 1 <= len(segment_id) <= 128 or not set(segment_id) <= _ID_CHARS:
            raise ValueError(
                f"segment id {_show(segment_id)} is invalid: use 1 to 128 letters, digits, "
                "'_' or '-'"
            )
        return segment_id


class ConsentCondition(_Model):
    """The stored consent status of one purpose."""

    type: Literal["consent"] = "consent"
    purpose: str
    status: ConsentStatus = ConsentStatus.GRANTED

    @field_validator("purpose")
    @classmethod
    def _check_purpose(cls, purpose: str) -> str:
        if (
            not 1 <= len(purpose) <= 64
            or not set(purpose) <= _PURPOSE_CHARS
            or not purpose[0].isalpha()
        ):
            raise ValueError(
                f"purpose {_show(purpose)} is invalid: use a lowercase identifier such as "
                "'email_marketing'"
            )
        return purpose


class ContactableCondition(_Model):
    """A valid address, not unsubscribed, and marketing consent granted, for one channel."""

    type: Literal["contactable"] = "contactable"
    channel: Channel


class AllCondition(_Model):
    """Every condition holds."""

    type: Literal["all"] = "all"
    of: tuple["Condition", ...] = Field(min_length=1)


class AnyCondition(_Model):
    """At least one condition holds."""

    type: Literal["any"] = "any"
    of: tuple["Condition", ...] = Field(min_length=1)


class NotCondition(_Model):
    """The condition does not hold."""

    type: Literal["not"] = "not"
    rule: "Condition"


Condition: TypeAlias = Annotated[
    AllCondition
    | AnyCondition
    | NotCondition
    | TraitCondition
    | StatCondition
    | ComputedCondition
    | EventCondition
    | SinceCondition
    | SegmentCondition
    | ConsentCondition
    | ContactableCondition,
    Field(discriminator="type"),
]

CONDITION_TYPES = (
    "all",
    "any",
    "not",
    "trait",
    "stat",
    "computed",
    "event",
    "since",
    "segment",
    "consent",
    "contactable",
)

AllCondition.model_rebuild()
AnyCondition.model_rebuild()
NotCondition.model_rebuild()


class _DefinitionModel(_Model):
    version: int
    rule: Condition

    @field_validator("version", mode="plain")
    @classmethod
    def _check_version(cls, version: Any) -> int:
        if type(version) is not int or version != LANGUAGE_VERSION:
            raise ValueError(
                f"unsupported version {_show(version)} (this server speaks {LANGUAGE_VERSION})"
            )
        return LANGUAGE_VERSION


# --- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    """A parsed, valid segment definition."""

    version: int
    rule: Condition

    def to_document(self) -> dict[str, Any]:
        """Returns the JSON-ready form, which `parse_definition` reads back to an equal value."""
        dumped = self.rule.model_dump(mode="json", exclude_none=True)
        return {"version": self.version, "rule": _in_reading_order(dumped)}


# Fields in the order a person writes them; the others follow as declared.
_READING_ORDER = ("type", "key", "property", "event_type", "name", "op", "value", "where")


def _in_reading_order(node: Any) -> Any:
    if isinstance(node, dict):
        first = [k for k in _READING_ORDER if k in node]
        rest = [k for k in node if k not in _READING_ORDER]
        return {k: _in_reading_order(node[k]) for k in [*first, *rest]}
    if isinstance(node, list):
        return [_in_reading_order(item) for item in node]
    return node


def parse_definition(doc: Mapping[str, Any]) -> Definition:
    """Returns the definition a JSON document holds; raises `InvalidSegmentRule` naming the path."""
    if not isinstance(doc, Mapping):
        raise InvalidSegmentRule(
            f'definition: must be an object {{"version": {LANGUAGE_VERSION}, "rule": {{...}}}}',
            problems=[("definition", "must be an object")],
        )
    _check_size(doc.get("rule"))
    try:
        model = _DefinitionModel.model_validate(doc)
    except ValidationError as exc:
        problems = [
            (_json_path(e["loc"], doc), _reason(e))
            for e in exc.errors()
            # pydantic counts only the valid items of a list, so a list whose items
            # all failed is also reported as too short; the items' errors say enough.
            if not (e["type"] == "too_short" and _raw_at(e["loc"], doc))
        ]
        shown = "; ".join(f"{path}: {reason}" for path, reason in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise InvalidSegmentRule(shown + more, problems=problems) from None
    return Definition(version=model.version, rule=model.rule)


def _check_size(rule: Any) -> None:
    """Checks the depth and size limits on the raw JSON, before anything recurses into it."""
    total = 0

    def walk(node: Any, path: str, depth: int) -> None:
        nonlocal total
        if not isinstance(node, Mapping):
            return
        total += 1
        if depth > MAX_DEPTH:
            reason = f"conditions nest deeper than {MAX_DEPTH} levels"
            raise InvalidSegmentRule(f"{path}: {reason}", problems=[(path, reason)])
        if total > MAX_CONDITIONS:
            reason = f"a rule may hold at most {MAX_CONDITIONS} conditions"
            raise InvalidSegmentRule(f"{path}: {reason}", problems=[(path, reason)])
        kind = node.get("type")
        children = node.get("of")
        if kind in ("all", "any") and isinstance(children, list):
            for index, child in enumerate(children):
                walk(child, f"{path}.of[{index}]", depth + 1)
        elif kind == "not":
            walk(node.get("rule"), f"{path}.rule", depth + 1)

    walk(rule, "rule", 1)


def _raw_at(loc: tuple[int | str, ...], doc: Any) -> Any:
    """Returns the raw input at pydantic's location, or None if there is none."""
    node: Any = doc
    for item in loc:
        if isinstance(item, int):
            node = node[item] if isinstance(node, list | tuple) and item < len(node) else None
        elif isinstance(node, Mapping) and item in node:
            node = node[item]
        elif not (isinstance(node, Mapping) and node.get("type") == item):
            return None
    return node


def _json_path(loc: tuple[int | str, ...], doc: Any) -> str:
    """Returns `rule.of[1].op` for pydantic's location, leaving out the union tags it adds."""
    path = ""
    node: Any = doc
    for item in loc:
        if isinstance(item, int):
            path += f"[{item}]"
            node = node[item] if isinstance(node, list | tuple) and item < len(node) else None
        elif isinstance(node, Mapping) and item in node:
            path += f".{item}" if path else item
            node = node[item]
        elif isinstance(node, Mapping) and node.get("type") == item:
            continue  # the tag pydantic inserts after a discriminated union
        elif item.startswith("function-"):
            continue
        else:
            path += f".{item}" if path else item
            node = None
    return path or "definition"


def _reason(error: Any) -> str:
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    field = next((x for x in reversed(error["loc"]) if isinstance(x, str)), "")
    if kind == "union_tag_invalid":
        expected = ", ".join(CONDITION_TYPES)
        return f"unknown condition type {_show(ctx.get('tag'))} (expected one of {expected})"
    if kind == "union_tag_not_found":
        return f"a condition needs a 'type' (one of {', '.join(CONDITION_TYPES)})"
    if kind == "enum":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        noun = {"key": "stat", "event_type": "event type"}.get(field, field)
        return f"unknown {noun} {_show(given)} (expected one of {expected})"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be an object, not {_show(given)}"
    if kind in ("tuple_type", "list_type"):
        return f"must be a list, not {_show(given)}"
    if kind == "too_short":
        return "must hold at least one condition" if field == "of" else str(error["msg"])
    if kind == "too_long":
        return f"may hold at most {ctx.get('max_length')} items"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"{error['msg']}, not {_show(given)}"


# --- the facts a rule reads --------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileFacts:
    """What rules read of one profile: current values only, instants in UTC milliseconds.

    `profile_facts` builds them so from a stored document.
    """

    id: str
    traits: Mapping[str, Any] = field(default_factory=dict)
    stats: Mapping[str, Any] = field(default_factory=dict)
    computed: Mapping[str, Any] = field(default_factory=dict)
    consent: Mapping[str, str] = field(default_factory=dict)
    segments: frozenset[str] = frozenset()


@dataclass(frozen=True)
class EventFacts:
    """What rules read of one applied event; the timestamp is kept in UTC milliseconds."""

    type: str
    name: str | None
    timestamp: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # MongoDB keeps milliseconds; facts built from an unsaved event must compare alike.
        object.__setattr__(self, "timestamp", to_utc_ms(self.timestamp))


def _normalised(value: Any) -> Any:
    # Stored instants are UTC milliseconds; facts built from unsaved documents are made alike.
    if isinstance(value, datetime):
        return to_utc_ms(value)
    if isinstance(value, list):
        return [to_utc_ms(v) if isinstance(v, datetime) else v for v in value]
    return value


def _values(entries: Any) -> dict[str, Any]:
    if not isinstance(entries, Mapping):
        return {}
    return {
        str(key): _normalised(entry.get("value"))
        for key, entry in entries.items()
        if isinstance(entry, Mapping)
    }


def profile_facts(doc: Mapping[str, Any]) -> ProfileFacts:
    """Returns what rules read of a stored profile document."""
    stats = doc.get("stats")
    consent = doc.get("consent")
    segments = doc.get("segments")
    return ProfileFacts(
        id=str(doc["_id"]),
        traits=_values(doc.get("traits")),
        stats={k: _normalised(v) for k, v in stats.items()} if isinstance(stats, Mapping) else {},
        computed=_values(doc.get("computed")),
        consent={
            purpose: entry["status"]
            for purpose, entry in (consent.items() if isinstance(consent, Mapping) else ())
            if isinstance(entry, Mapping) and isinstance(entry.get("status"), str)
        },
        segments=frozenset(
            s for s in (segments if isinstance(segments, list) else ()) if isinstance(s, str)
        ),
    )


def event_facts(doc: Mapping[str, Any]) -> EventFacts:
    """Returns what rules read of a stored event document."""
    kind = doc["type"]
    if kind == EventType.TRACK:
        name = doc.get("event")
    elif kind in (EventType.PAGE, EventType.SCREEN):
        name = doc.get("name")
    else:
        name = None
    properties = doc.get("properties")
    return EventFacts(
        type=kind,
        name=name if isinstance(name, str) else None,
        timestamp=to_utc_ms(doc["timestamp"]),
        properties=(
            {k: _normalised(v) for k, v in properties.items()}
            if isinstance(properties, Mapping)
            else {}
        ),
    )


# --- evaluation in Python ---------------------------------------------------------------------


def _resolve(value: Scalar, now: datetime) -> Value:
    if isinstance(value, AbsoluteDate):
        return value.at
    if isinstance(value, RelativeDate):
        return now + value.offset
    return value


def _equal(stored: Any, value: Value) -> bool:
    kind = _stored_kind(stored)
    return kind is not None and kind == _stored_kind(value) and bool(stored == value)


def _order(stored: Any, value: Value) -> int | None:
    """Returns -1, 0 or 1 comparing a stored value with a rule value of its kind, else None."""
    kind = _stored_kind(stored)
    if kind is None or kind == "bool" or kind != _stored_kind(value):
        return None
    if isinstance(stored, float) and math.isnan(stored):
        return -1  # BSON orders NaN below every number, and MongoDB compares so
    return (stored > value) - (stored < value)  # type: ignore[no-any-return]


def _holds(stored: Any, op: Op, operand: Operand, now: datetime) -> bool:
    """Evaluates one comparison; `stored` is None when the value is missing or null."""
    if op == Op.EXISTS:
        return stored is not None
    if op == Op.MISSING:
        return stored is None
    if isinstance(operand, tuple):
        values = [_resolve(v, now) for v in operand]
        if op == Op.BETWEEN:
            low, high = _order(stored, values[0]), _order(stored, values[1])
            return low is not None and high is not None and low >= 0 and high <= 0
        found = any(_equal(stored, v) for v in values)
        return found if op == Op.IN else not found
    assert operand is not None
    value = _resolve(operand, now)
    if op == Op.EQ:
        return _equal(stored, value)
    if op == Op.NE:
        return not _equal(stored, value)
    if op == Op.CONTAINS:
        if isinstance(stored, str):
            return isinstance(value, str) and value in stored
        return isinstance(stored, list) and any(_equal(item, value) for item in stored)
    if op == Op.PREFIX:
        return isinstance(stored, str) and isinstance(value, str) and stored.startswith(value)
    order = _order(stored, value)
    if order is None:
        return False
    return {Op.GT: order > 0, Op.GTE: order >= 0, Op.LT: order < 0, Op.LTE: order <= 0}[op]


def _stat_value(profile: ProfileFacts, key: Stat) -> Any:
    value = profile.stats.get(key)
    return 0 if value is None and key.is_counter else value


def _window_count(rule: EventCondition, events: Sequence[EventFacts], now: datetime) -> int:
    within, before = rule.within_delta, rule.before_delta
    low = None if within is None else now - within
    high = None if before is None else now - before
    return sum(
        1
        for e in events
        if (low is None or e.timestamp >= low)
        and (high is None or e.timestamp <= high)
        and rule.selects(e, now)
    )


def _since_holds(rule: SinceCondition, events: Sequence[EventFacts], now: datetime) -> bool:
    anchors = [e.timestamp for e in events if rule.anchor.selects(e, now)]
    if not anchors:
        return False
    after = rule.direction == Direction.AFTER
    moment = max(anchors) if after else min(anchors)
    elapsed = rule.elapsed_delta
    if elapsed is not None and now - moment < elapsed:
        return False
    count = sum(
        1
        for e in events
        if (e.timestamp > moment if after else e.timestamp < moment) and rule.then.selects(e, now)
    )
    return rule.count.admits(count)


def _contactable(profile: ProfileFacts, channel: Channel) -> bool:
    names = CHANNELS[channel]
    address = profile.traits.get(names.address)
    return (
        isinstance(address, str)
        and address != ""
        and _equal(profile.traits.get(names.status), "valid")
        and profile.traits.get(names.unsubscribed) is not True
        and profile.consent.get(names.consent) == ConsentStatus.GRANTED
    )


def _evaluate(
    rule: Condition, profile: ProfileFacts, events: Sequence[EventFacts], now: datetime
) -> bool:
    match rule:
        case AllCondition():
            return all(_evaluate(c, profile, events, now) for c in rule.of)
        case AnyCondition():
            return any(_evaluate(c, profile, events, now) for c in rule.of)
        case NotCondition():
            return not _evaluate(rule.rule, profile, events, now)
        case TraitCondition():
            return _holds(profile.traits.get(rule.key), rule.op, rule.value, now)
        case ComputedCondition():
            return _holds(profile.computed.get(rule.key), rule.op, rule.value, now)
        case StatCondition():
            return _holds(_stat_value(profile, rule.key), rule.op, rule.value, now)
        case EventCondition():
            return rule.count.admits(_window_count(rule, events, now))
        case SinceCondition():
            return _since_holds(rule, events, now)
        case SegmentCondition():
            return (rule.id in profile.segments) == rule.member
        case ConsentCondition():
            return profile.consent.get(rule.purpose) == rule.status
        case ContactableCondition():
            return _contactable(profile, rule.channel)
    raise AssertionError(f"unhandled condition {rule!r}")


def matches(
    rule: Condition, profile: ProfileFacts, events: Sequence[EventFacts], *, now: datetime
) -> bool:
    """Returns whether the profile is a member, given its applied events (as `event_query` loads).

    `now` is taken in UTC milliseconds, the precision MongoDB keeps, as in `to_pipeline`.
    """
    return _evaluate(rule, profile, events, to_utc_ms(now))


# --- compilation to an aggregation pipeline ---------------------------------------------------


def _literal(value: Any) -> dict[str, Any]:
    return {"$literal": value}


def _and(parts: list[Any]) -> Any:
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _type_is(expr: Any, bson_type: str) -> dict[str, Any]:
    return {"$eq": [{"$type": expr}, bson_type]}


def _kind_check(expr: Any, kind: _Kind) -> dict[str, Any]:
    return {"$isNumber": expr} if kind == "number" else _type_is(expr, kind)


def _absent(expr: Any) -> dict[str, Any]:
    return {"$in": [{"$type": expr}, ["missing", "null"]]}


def _compare_expr(expr: Any, op: Op, operand: Operand, now: datetime) -> Any:
    """Returns the aggregation expression that `_holds` evaluates in Python."""
    if op == Op.EXISTS:
        return {"$not": [_absent(expr)]}
    if op == Op.MISSING:
        return _absent(expr)
    if isinstance(operand, tuple):
        values = [_resolve(v, now) for v in operand]
        if op == Op.BETWEEN:
            kind = _rule_kind(operand[0])
            return {
                "$and": [
                    _kind_check(expr, kind),
                    {"$gte": [expr, _literal(values[0])]},
                    {"$lte": [expr, _literal(values[1])]},
                ]
            }
        # `$in` compares like `$eq`: numbers by value, other kinds never equal.
        found = {"$in": [expr, _literal(values)]}
        return found if op == Op.IN else {"$not": [found]}
    assert operand is not None
    value = _resolve(operand, now)
    if op == Op.EQ:
        return {"$eq": [expr, _literal(value)]}
    if op == Op.NE:
        return {"$ne": [expr, _literal(value)]}
    if op == Op.CONTAINS:
        in_string: Any = False
        if isinstance(value, str):
            in_string = {"$gte": [{"$indexOfCP": [expr, _literal(value)]}, 0]}
        in_list = {"$cond": [{"$isArray": expr}, {"$in": [_literal(value), expr]}, False]}
        return {"$cond": [_type_is(expr, "string"), in_string, in_list]}
    if op == Op.PREFIX:
        assert isinstance(value, str)
        head = {"$substrCP": [expr, 0, len(value)]}
        return {"$cond": [_type_is(expr, "string"), {"$eq": [head, _literal(value)]}, False]}
    operator = {Op.GT: "$gt", Op.GTE: "$gte", Op.LT: "$lt", Op.LTE: "$lte"}[op]
    return {"$and": [_kind_check(expr, _rule_kind(operand)), {operator: [expr, _literal(value)]}]}


def _property(name: str) -> dict[str, Any]:
    # The name was checked (no '$', '.' or NUL), so it is one plain path segment. Not
    # `$getField`: on SecantusDB 0.7 it yields an object for a missing field.
    return {"$cond": [_type_is("$properties", "object"), f"$properties.{name}", None]}


def _first_field(array_field: str, name: str, default: Any) -> dict[str, Any]:
    # SecantusDB yields null for `"$array.field"`, so take the element first.
    return {
        "$let": {
            "vars": {"g": {"$arrayElemAt": [f"${array_field}", 0]}},
            "in": {"$ifNull": [f"$$g.{name}", default]},
        }
    }


class _Compiler:
    """Turns a rule into `$lookup` stages and one boolean expression over a profile."""

    def __init__(self, now: datetime, events: str) -> None:
        self.now = now
        self.events = events
        self.stages: list[dict[str, Any]] = []
        self.fields: list[str] = []

    def _field(self) -> str:
        name = f"{_TEMP_PREFIX}{len(self.fields)}"
        self.fields.append(name)
        return name

    def _selector_match(self, selector: EventSelector) -> dict[str, Any]:
        match: dict[str, Any] = {"status": "applied"}
        if selector.event_type is not None:
            match["type"] = selector.event_type.value
        if selector.name is not None:
            match["event" if selector.event_type == EventType.TRACK else "name"] = selector.name
        return match

    def _where(self, selector: EventSelector) -> list[Any]:
        return [
            _compare_expr(_property(w.property), w.op, w.value, self.now) for w in selector.where
        ]

    def _lookup(
        self,
        match: dict[str, Any],
        tail: list[dict[str, Any]],
        let: dict[str, Any] | None = None,
    ) -> str:
        name = self._field()
        # localField/foreignField uses the (profile_id, timestamp) index; on SecantusDB the
        # `let` + `$expr` join on profile_id scans every event for every profile.
        lookup: dict[str, Any] = {
            "from": self.events,
            "localField": "_id",
            "foreignField": "profile_id",
            "pipeline": [{"$match": match}, *tail],
            "as": name,
        }
        if let:
            lookup["let"] = let
        self.stages.append({"$lookup": lookup})
        return name

    def _count_tail(self, count: Count) -> list[dict[str, Any]]:
        # `$count` is unknown inside a SecantusDB `$lookup`; `$group` works everywhere.
        return [{"$limit": count.decisive}, {"$group": {"_id": None, "n": {"$sum": 1}}}]

    def _bounds(self, count_expr: Any, count: Count) -> Any:
        parts: list[Any] = [{"$gte": [count_expr, count.min]}]
        if count.max is not None:
            parts.append({"$lte": [count_expr, count.max]})
        return _and(parts)

    def _event(self, rule: EventCondition) -> Any:
        if count_is_trivial(rule.count):
            return True
        match = self._selector_match(rule)
        window: dict[str, datetime] = {}
        if rule.within_delta is not None:
            window["$gte"] = self.now - rule.within_delta
        if rule.before_delta is not None:
            window["$lte"] = self.now - rule.before_delta
        if window:
            match["timestamp"] = window
        where = self._where(rule)
        if where:
            match["$expr"] = _and(where)
        name = self._lookup(match, self._count_tail(rule.count))
        return self._bounds(_first_field(name, "n", 0), rule.count)

    def _since(self, rule: SinceCondition) -> Any:
        after = rule.direction == Direction.AFTER
        anchor_match = self._selector_match(rule.anchor)
        where = self._where(rule.anchor)
        if where:
            anchor_match["$expr"] = _and(where)
        pick = "$max" if after else "$min"
        anchors = self._lookup(anchor_match, [{"$group": {"_id": None, "t": {pick: "$timestamp"}}}])
        moment = self._field()
        self.stages.append({"$addFields": {moment: _first_field(anchors, "t", None)}})
        parts: list[Any] = [_type_is(f"${moment}", "date")]
        elapsed = rule.elapsed_delta
        if elapsed is not None:
            parts.append({"$lte": [f"${moment}", self.now - elapsed]})
        if not count_is_trivial(rule.count):
            then_match = self._selector_match(rule.then)
            side = {"$gt" if after else "$lt": ["$timestamp", "$$anchor"]}
            then_match["$expr"] = _and([side, *self._where(rule.then)])
            counted = self._lookup(
                then_match, self._count_tail(rule.count), let={"anchor": f"${moment}"}
            )
            parts.append(self._bounds(_first_field(counted, "n", 0), rule.count))
        return _and(parts)

    def expr(self, rule: Condition) -> Any:
        """Returns the boolean expression of a rule, adding the lookups it needs."""
        match rule:
            case AllCondition():
                return _and([self.expr(c) for c in rule.of])
            case AnyCondition():
                parts = [self.expr(c) for c in rule.of]
                return parts[0] if len(parts) == 1 else {"$or": parts}
            case NotCondition():
                return {"$not": [self.expr(rule.rule)]}
            case TraitCondition():
                return _compare_expr(f"$traits.{rule.key}.value", rule.op, rule.value, self.now)
            case ComputedCondition():
                return _compare_expr(f"$computed.{rule.key}.value", rule.op, rule.value, self.now)
            case StatCondition():
                stat: Any = f"$stats.{rule.key.value}"
                if rule.key.is_counter:
                    stat = {"$ifNull": [stat, 0]}
                return _compare_expr(stat, rule.op, rule.value, self.now)
            case EventCondition():
                return self._event(rule)
            case SinceCondition():
                return self._since(rule)
            case SegmentCondition():
                member = {
                    "$cond": [
                        {"$isArray": "$segments"},
                        {"$in": [_literal(rule.id), "$segments"]},
                        False,
                    ]
                }
                return member if rule.member else {"$not": [member]}
            case ConsentCondition():
                return {"$eq": [f"$consent.{rule.purpose}.status", _literal(rule.status.value)]}
            case ContactableCondition():
                names = CHANNELS[rule.channel]
                address = f"$traits.{names.address}.value"
                return {
                    "$and": [
                        _type_is(address, "string"),
                        {"$ne": [address, ""]},
                        {"$eq": [f"$traits.{names.status}.value", _literal("valid")]},
                        {"$ne": [f"$traits.{names.unsubscribed}.value", True]},
                        {
                            "$eq": [
                                f"$consent.{names.consent}.status",
                                _literal(ConsentStatus.GRANTED.value),
                            ]
                        },
                    ]
                }
        raise AssertionError(f"unhandled condition {rule!r}")


def count_is_trivial(count: Count) -> bool:
    """Returns whether the bounds admit every count (min 0, no max)."""
    return count.min == 0 and count.max is None


def _reads_events(rule: Condition) -> bool:
    match rule:
        case AllCondition() | AnyCondition():
            return any(_reads_events(c) for c in rule.of)
        case NotCondition():
            return _reads_events(rule.rule)
        case EventCondition() | SinceCondition():
            return True
    return False


def to_pipeline(
    rule: Condition, *, now: datetime, events_collection: str = EVENTS
) -> list[dict[str, Any]]:
    """Returns aggregation stages over `profiles` that pass exactly the members.

    Append them after `{"$match": {"merged_into": None}}`. Conditions that read no
    events are matched first, and each event condition of a top-level `all` is
    matched right after its own `$lookup`s, so lookups run only for profiles still in.
    The profiles come out as stored; the temporary fields are removed again.
    """
    compiler = _Compiler(to_utc_ms(now), events_collection)
    parts = list(rule.of) if isinstance(rule, AllCondition) else [rule]
    early = [c for c in parts if not _reads_events(c)]
    late = [c for c in parts if _reads_events(c)]
    stages: list[dict[str, Any]] = []
    if early:
        stages.append({"$match": {"$expr": _and([compiler.expr(c) for c in early])}})
    if late:
        # Each condition's lookups are followed by its own match, so a profile an
        # `all` already rules out is not looked up again for the next condition.
        for condition in late:
            start = len(compiler.stages)
            expression = compiler.expr(condition)
            stages += [*compiler.stages[start:], {"$match": {"$expr": expression}}]
        if compiler.fields:
            stages.append({"$unset": compiler.fields})
    return stages


# --- dependencies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dependencies:
    """What a rule reads, so a caller re-evaluates it only when one of these changes.

    `any_event` says some event selector has no name (e.g. any page view).
    `lookback` is how far back events matter: None means all history (a `since`
    anchor, or an event count without `within`); zero means no events at all.
    `event_types` (beyond the agreed fields) lists the event types selectors read,
    so `event_query` can narrow by type; empty means "not known".
    """

    traits: frozenset[str] = frozenset()
    stats: frozenset[str] = frozenset()
    computed: frozenset[str] = frozenset()
    event_names: frozenset[str] = frozenset()
    any_event: bool = False
    segments: frozenset[str] = frozenset()
    consent: frozenset[str] = frozenset()
    time_based: bool = False
    lookback: timedelta | None = timedelta(0)
    event_types: frozenset[str] = frozenset()

    @property
    def reads_events(self) -> bool:
        """Returns whether any event matters at all."""
        return self.any_event or bool(self.event_names)

    def union(self, *others: "Dependencies") -> "Dependencies":
        """Returns what this and the others read together (for several segments at once)."""
        every = (self, *others)
        lookbacks = [d.lookback for d in every]
        return Dependencies(
            traits=frozenset().union(*(d.traits for d in every)),
            stats=frozenset().union(*(d.stats for d in every)),
            computed=frozenset().union(*(d.computed for d in every)),
            event_names=frozenset().union(*(d.event_names for d in every)),
            any_event=any(d.any_event for d in every),
            segments=frozenset().union(*(d.segments for d in every)),
            consent=frozenset().union(*(d.consent for d in every)),
            time_based=any(d.time_based for d in every),
            lookback=None if None in lookbacks else max(x for x in lookbacks if x is not None),
            event_types=(
                frozenset().union(*(d.event_types for d in every))
                if all(d.event_types or not d.reads_events for d in every)
                else frozenset()
            ),
        )


def _operand_is_relative(operand: Operand) -> bool:
    values = operand if isinstance(operand, tuple) else (operand,)
    return any(isinstance(v, RelativeDate) for v in values)


def _selectors(rule: Condition) -> Iterator[tuple[EventSelector, timedelta | None]]:
    """Yields each event selector with how far back its events matter (None: all history)."""
    match rule:
        case AllCondition() | AnyCondition():
            for child in rule.of:
                yield from _selectors(child)
        case NotCondition():
            yield from _selectors(rule.rule)
        case EventCondition():
            yield rule, rule.within_delta
        case SinceCondition():
            yield rule.anchor, None
            yield rule.then, None


def _leaves(rule: Condition) -> Iterator[Condition]:
    match rule:
        case AllCondition() | AnyCondition():
            for child in rule.of:
                yield from _leaves(child)
        case NotCondition():
            yield from _leaves(rule.rule)
        case _:
            yield rule


def _is_time_based(rule: Condition) -> bool:
    match rule:
        case TraitCondition() | ComputedCondition() | StatCondition():
            return _operand_is_relative(rule.value)
        case EventCondition():
            return rule.within is not None or rule.before is not None or _where_moves(rule)
        case SinceCondition():
            return rule.elapsed is not None or _where_moves(rule.anchor) or _where_moves(rule.then)
    return False


def _where_moves(selector: EventSelector) -> bool:
    return any(_operand_is_relative(w.value) for w in selector.where)


def dependencies(rule: Condition) -> Dependencies:
    """Returns what a rule reads."""
    traits: set[str] = set()
    stats: set[str] = set()
    computed: set[str] = set()
    segments: set[str] = set()
    consent: set[str] = set()
    for leaf in _leaves(rule):
        match leaf:
            case TraitCondition():
                traits.add(leaf.key)
            case ComputedCondition():
                computed.add(leaf.key)
            case StatCondition():
                stats.add(leaf.key.value)
            case SegmentCondition():
                segments.add(leaf.id)
            case ConsentCondition():
                consent.add(leaf.purpose)
            case ContactableCondition():
                channel = CHANNELS[leaf.channel]
                traits.update((channel.address, channel.status, channel.unsubscribed))
                consent.add(channel.consent)
    selectors = list(_selectors(rule))
    names = {s.name for s, _ in selectors if s.name is not None}
    types: set[str] = set()
    for selector, _ in selectors:
        if selector.event_type is None:
            types.update(t.value for t in EventType)
        else:
            types.add(selector.event_type.value)
    lookbacks = [back for _, back in selectors]
    return Dependencies(
        traits=frozenset(traits),
        stats=frozenset(stats),
        computed=frozenset(computed),
        event_names=frozenset(names),
        any_event=any(s.name is None for s, _ in selectors),
        segments=frozenset(segments),
        consent=frozenset(consent),
        time_based=any(_is_time_based(leaf) for leaf in _leaves(rule)),
        lookback=(
            timedelta(0)
            if not lookbacks
            else None
            if None in lookbacks
            else max(x for x in lookbacks if x is not None)
        ),
        event_types=frozenset(types),
    )


def event_query(deps: Dependencies, *, now: datetime) -> dict[str, Any]:
    """Returns the filter (without `profile_id`) that loads the events `matches` needs.

    It narrows by status, time and type, and by name when every selector names a
    track event, or every one names a page or screen. It never uses `$or`: on
    SecantusDB an `$or` across fields turns the indexed read into a collection scan.
    With no events to read it matches nothing (callers may skip the query then).
    """
    query: dict[str, Any] = {"status": "applied"}
    if not deps.reads_events:
        query["type"] = {"$in": []}
        return query
    if deps.lookback is not None:
        query["timestamp"] = {"$gte": to_utc_ms(now) - deps.lookback}
    every_type = frozenset(t.value for t in EventType)
    named = frozenset(t.value for t in _NAMED_TYPES)
    types = deps.event_types or (every_type if deps.any_event else named)
    if types != every_type:
        query["type"] = next(iter(types)) if len(types) == 1 else {"$in": sorted(types)}
    if not deps.any_event:
        names = sorted(deps.event_names)
        if types == {EventType.TRACK.value}:
            query["event"] = {"$in": names}
        elif EventType.TRACK.value not in types:
            query["name"] = {"$in": names}
    return query


# --- when time alone changes the answer ------------------------------------------------------


def _dates_in(stored: Any) -> list[datetime]:
    if isinstance(stored, datetime):
        return [stored]
    if isinstance(stored, list):
        return [v for v in stored if isinstance(v, datetime)]
    return []


def _crossings(stored: Any, operand: Operand) -> Iterator[datetime]:
    """Yields the instants at which a relative bound passes a stored date."""
    values = operand if isinstance(operand, tuple) else (operand,)
    for value in values:
        if isinstance(value, RelativeDate):
            for moment in _dates_in(stored):
                # The bound equals the date at `edge`; strict and loose ops flip there or 1 ms on.
                edge = moment - value.offset
                yield edge
                yield edge + _MS


def _selector_crossings(
    selector: EventSelector, events: Sequence[EventFacts]
) -> Iterator[datetime]:
    for event in events:
        if selector.selects_kind(event):
            for w in selector.where:
                yield from _crossings(event.properties.get(w.property), w.value)


def _candidates(
    rule: Condition, profile: ProfileFacts, events: Sequence[EventFacts]
) -> Iterator[datetime]:
    """Yields every instant at which some part of the rule may flip (a superset)."""
    for leaf in _leaves(rule):
        match leaf:
            case TraitCondition():
                yield from _crossings(profile.traits.get(leaf.key), leaf.value)
            case ComputedCondition():
                yield from _crossings(profile.computed.get(leaf.key), leaf.value)
            case StatCondition():
                yield from _crossings(_stat_value(profile, leaf.key), leaf.value)
            case EventCondition():
                yield from _selector_crossings(leaf, events)
                within, before = leaf.within_delta, leaf.before_delta
                for event in events:
                    if leaf.selects_kind(event):
                        if within is not None:
                            yield event.timestamp + within + _MS  # leaves the window
                        if before is not None:
                            yield event.timestamp + before  # enters the window
            case SinceCondition():
                yield from _selector_crossings(leaf.anchor, events)
                yield from _selector_crossings(leaf.then, events)
                elapsed = leaf.elapsed_delta
                if elapsed is not None:
                    for event in events:
                        if leaf.anchor.selects_kind(event):
                            yield event.timestamp + elapsed


def _milliseconds_around(moment: datetime) -> tuple[datetime, ...]:
    # Rules see time in whole milliseconds; a finer instant flips at one of these two.
    floor = to_utc_ms(moment)
    return (floor,) if floor == moment else (floor, floor + _MS)


def next_change(
    rule: Condition, profile: ProfileFacts, events: Sequence[EventFacts], *, now: datetime
) -> datetime | None:
    """Returns the earliest instant after `now` at which `matches` changes with no new data.

    The instants at which any part of the rule can flip (an event leaving a
    `within` window or passing a `before` delay, an anchor's `elapsed` passing, a
    relative bound passing a stored date) are tried in order and the first one
    where the answer differs is returned; None if none does. After 64 tries it
    returns the next instant untried, which may be early but is never late.
    """
    current = matches(rule, profile, events, now=now)
    instants = sorted(
        {m for c in _candidates(rule, profile, events) for m in _milliseconds_around(c) if m > now}
    )
    for tried, instant in enumerate(instants):
        if tried >= _MAX_PROBES or matches(rule, profile, events, now=instant) != current:
            return instant
    return None


def relevant_events(
    deps: Dependencies, events: Sequence[EventFacts], *, now: datetime
) -> list[EventFacts]:
    """Returns the events a rule with these dependencies can see: `event_query` in Python.

    Events loaded once for several rules are narrowed per rule, so each
    evaluation (and each instant `next_change` tries, all later than `now`)
    scans only its own.
    """
    if not deps.reads_events:
        return []
    since = None if deps.lookback is None else to_utc_ms(now) - deps.lookback
    return [
        e
        for e in events
        if (since is None or e.timestamp >= since)
        and (not deps.event_types or e.type in deps.event_types)
        and (deps.any_event or e.name in deps.event_names)
    ]
