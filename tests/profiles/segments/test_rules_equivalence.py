"""Random rules over random profiles: MongoDB and Python agree on every member (invariant 5).

The generators draw values near the edges the semantics care about: every kind
of value (and lists, objects, null and missing) under the same few keys, rule
values from the same small pools, and instants on and one millisecond either
side of the window lengths the rules use. The same generators drive the pure
properties at the end (round trip, `next_change`).
"""

import os
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import ASCENDING, MongoClient

from profiles.segments.rules import (
    Definition,
    EventFacts,
    ProfileFacts,
    Stat,
    dependencies,
    event_facts,
    event_query,
    matches,
    next_change,
    parse_definition,
    profile_facts,
    relevant_events,
    to_pipeline,
)

EXAMPLES = int(os.environ.get("KINDRED_PROPERTY_EXAMPLES", "60"))
# Millisecond-aligned, as stored instants are; rules get `now` with microseconds on top.
NOW = datetime(2024, 6, 1, 12, 0, 0, 123_000, tzinfo=UTC)
EVAL_AT = NOW + timedelta(microseconds=456)
MS = timedelta(milliseconds=1)

DURATIONS = {"1h": timedelta(hours=1), "48h": timedelta(hours=48), "7d": timedelta(days=7)}
DURATIONS["30d"] = timedelta(days=30)
RELATIVES = ["-1h", "-48h", "-7d", "-30d", "+1h", "-0d"]
TRAIT_KEYS = ["plan", "age", "tags", "email", "email_status", "unsubscribed"]
COMPUTED_KEYS = ["rfm_group", "cluster"]
PROPERTIES = ["category", "total", "Product Name"]
TRACK_NAMES = ["Product Added", "Order Completed", "Home"]
PAGE_NAMES = ["Home", "Pricing"]
PURPOSES = ["email_marketing", "sms_marketing", "analytics"]
SEGMENTS = ["seg_a", "seg_b"]
STRINGS = ["", "a", "ab", "b", "B", "$x", "$traits.plan.value", "é", "😀", "valid", "x@y.io"]


def _edges() -> list[datetime]:
    lengths = [timedelta(0), *DURATIONS.values()]
    return [
        NOW + sign * length + nudge
        for length in lengths
        for sign in (-1, 1)
        for nudge in (-MS, 0 * MS, MS)
    ]


instants = st.one_of(
    st.sampled_from(_edges()),
    st.integers(-40 * 86_400_000, 5 * 86_400_000).map(lambda ms: NOW + ms * MS),
)
stored_scalars = st.one_of(
    st.booleans(),
    st.integers(-2, 3),
    st.sampled_from([2**53 + 1, -(2**62), 1.5, 2.0, -0.0, float("nan")]),
    st.sampled_from(STRINGS),
    instants,
)
stored_values = st.one_of(
    stored_scalars,
    stored_scalars,
    st.lists(stored_scalars, max_size=3),
    st.none(),
    st.just({"a": 1}),
)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


dates = st.one_of(
    instants.map(lambda m: {"date": _iso(m)}),
    st.sampled_from(RELATIVES).map(lambda r: {"relative": r}),
)
numbers = st.one_of(st.integers(-2, 3), st.sampled_from([1.5, 2.0, 2**53]))
strings = st.sampled_from(STRINGS)
rule_scalars = st.one_of(st.booleans(), numbers, strings, dates)


@st.composite
def between(draw: st.DrawFn, kind: str) -> list[Any]:
    if kind == "number":
        return sorted(draw(st.lists(numbers, min_size=2, max_size=2)))
    if kind == "string":
        return sorted(draw(st.lists(strings, min_size=2, max_size=2)))
    low, high = draw(dates), draw(dates)
    if "date" in low and "date" in high:
        return sorted([low, high], key=lambda d: d["date"])
    if "relative" in low and "relative" in high:
        return sorted(
            [low, high],
            key=lambda d: int(d["relative"][:-1]) * {"h": 1, "d": 24}[d["relative"][-1]],
        )
    return [low, high]


@st.composite
def comparison(draw: st.DrawFn, kind: str | None = None) -> dict[str, Any]:
    """An op and a value; `kind` restricts values for stats (number or date)."""
    ops = ["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between"]
    if kind is None:
        ops += ["exists", "missing", "contains", "prefix"]
    elif kind == "date":
        ops += ["exists", "missing"]
    op = draw(st.sampled_from(ops))
    values = {"number": numbers, "date": dates, None: rule_scalars}[kind]
    if op in ("exists", "missing"):
        return {"op": op}
    if op in ("in", "not_in"):
        return {"op": op, "value": draw(st.lists(values, min_size=1, max_size=4))}
    if op == "between":
        return {
            "op": op,
            "value": draw(between(kind or draw(st.sampled_from(["number", "string", "date"])))),
        }
    if op in ("gt", "gte", "lt", "lte"):
        ordered = values if kind else st.one_of(numbers, strings, dates)
        return {"op": op, "value": draw(ordered)}
    if op == "prefix":
        return {"op": op, "value": draw(strings)}
    return {"op": op, "value": draw(values)}


@st.composite
def selectors(draw: st.DrawFn, filtered: bool = True) -> dict[str, Any]:
    selector: dict[str, Any] = {}
    event_type = draw(st.sampled_from([None, "track", "page", "screen", "identify"]))
    if event_type is not None:
        selector["event_type"] = event_type
    if event_type in (None, "track") and draw(st.booleans()):
        selector["name"] = draw(st.sampled_from(TRACK_NAMES))
    elif event_type in ("page", "screen") and draw(st.booleans()):
        selector["name"] = draw(st.sampled_from(PAGE_NAMES))
    filters = draw(st.lists(st.sampled_from(PROPERTIES), max_size=2 if filtered else 0))
    if filters:
        selector["where"] = [{"property": p, **draw(comparison())} for p in filters]
    return selector


counts = st.one_of(
    st.none(),
    st.builds(
        lambda low, extra: {"min": low, "max": None if extra is None else low + extra},
        st.integers(0, 2),
        st.one_of(st.none(), st.integers(0, 2)),
    ),
    st.just({"max": 0}),
)


def _with_count(condition: dict[str, Any], count: dict[str, Any] | None) -> dict[str, Any]:
    if count is not None:
        condition["count"] = {k: v for k, v in count.items() if v is not None}
    return condition


@st.composite
def event_conditions(draw: st.DrawFn, filtered: bool = True) -> dict[str, Any]:
    condition = {"type": "event", **draw(selectors(filtered))}
    within = draw(st.sampled_from([None, *DURATIONS]))
    before = draw(st.sampled_from([None, *DURATIONS]))
    if within is not None:
        condition["within"] = within
    if before is not None and (within is None or DURATIONS[before] < DURATIONS[within]):
        condition["before"] = before
    return _with_count(condition, draw(counts))


@st.composite
def since_conditions(draw: st.DrawFn, filtered: bool = True) -> dict[str, Any]:
    anchor, then = draw(selectors(filtered)), draw(selectors(filtered))
    condition = {"type": "since", "anchor": anchor, "then": then}
    elapsed = draw(st.sampled_from([None, *DURATIONS]))
    if elapsed is not None:
        condition["elapsed"] = elapsed
    if draw(st.booleans()):
        condition["direction"] = draw(st.sampled_from(["after", "before"]))
    return _with_count(condition, draw(counts))


@st.composite
def stat_conditions(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from(list(Stat)))
    kind = "number" if key.is_counter else "date"
    return {"type": "stat", "key": key.value, **draw(comparison(kind))}


leaves = st.one_of(
    st.builds(
        lambda k, c: {"type": "trait", "key": k, **c}, st.sampled_from(TRAIT_KEYS), comparison()
    ),
    st.builds(
        lambda k, c: {"type": "computed", "key": k, **c},
        st.sampled_from(COMPUTED_KEYS),
        comparison(),
    ),
    stat_conditions(),
    event_conditions(),
    since_conditions(),
    st.builds(
        lambda s, m: {"type": "segment", "id": s, "member": m},
        st.sampled_from(SEGMENTS),
        st.booleans(),
    ),
    st.builds(
        lambda p, s: {"type": "consent", "purpose": p, "status": s},
        st.sampled_from(PURPOSES),
        st.sampled_from(["granted", "denied", "revoked"]),
    ),
    st.builds(lambda c: {"type": "contactable", "channel": c}, st.sampled_from(["email", "sms"])),
)


def _tree(
    depth: int, leaves: st.SearchStrategy[dict[str, Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    if depth >= 3:
        return leaves
    inner = _tree(depth + 1, leaves)
    return st.one_of(
        leaves,
        leaves,
        st.builds(
            lambda t, of: {"type": t, "of": of},
            st.sampled_from(["all", "any"]),
            st.lists(inner, min_size=1, max_size=3),
        ),
        st.builds(lambda r: {"type": "not", "rule": r}, inner),
    )


def _parsed(rule: dict[str, Any]) -> Definition:
    return parse_definition({"version": 1, "rule": rule})


definitions = _tree(0, leaves).map(_parsed)

# Rules whose every leaf moves with time, for `next_change`.
moving_leaves = st.one_of(
    event_conditions(filtered=False).filter(lambda c: "within" in c or "before" in c),
    since_conditions(filtered=False).filter(lambda c: "elapsed" in c),
    st.builds(
        lambda k, op, r: {"type": "stat", "key": k, "op": op, "value": {"relative": r}},
        st.sampled_from([s.value for s in Stat if not s.is_counter]),
        st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
        st.sampled_from(RELATIVES),
    ),
    st.builds(
        lambda k, op, r: {"type": "trait", "key": k, "op": op, "value": [{"relative": r}]},
        st.sampled_from(TRAIT_KEYS),
        st.sampled_from(["in", "not_in"]),
        st.sampled_from(RELATIVES),
    ),
)
moving_definitions = st.one_of(moving_leaves, _tree(2, moving_leaves)).map(_parsed)


def _entries(values: dict[str, Any]) -> dict[str, Any]:
    return {k: {"value": v, "observed_at": NOW, "source": "web"} for k, v in values.items()}


@st.composite
def profiles(draw: st.DrawFn, index: int) -> dict[str, Any]:
    traits = draw(st.dictionaries(st.sampled_from(TRAIT_KEYS), stored_values, max_size=5))
    if draw(st.booleans()):  # often enough for `contactable` to hold
        traits.update(
            email="x@y.io", email_status="valid", phone="+4712345678", phone_status="valid"
        )
    stats: dict[str, Any] = {}
    for stat in draw(st.lists(st.sampled_from(list(Stat)), max_size=6, unique=True)):
        stats[stat.value] = draw(st.integers(0, 3) if stat.is_counter else instants)
    consent = draw(
        st.dictionaries(
            st.sampled_from(PURPOSES), st.sampled_from(["granted", "denied", "revoked"])
        )
    )
    return {
        "_id": f"p{index}",
        "merged_into": None,
        "traits": _entries(traits),
        "stats": stats,
        "computed": _entries(
            draw(st.dictionaries(st.sampled_from(COMPUTED_KEYS), stored_values, max_size=2))
        ),
        "consent": {p: {"status": s, "at": NOW, "source": "web"} for p, s in consent.items()},
        "segments": draw(st.lists(st.sampled_from(SEGMENTS), unique=True)),
    }


@st.composite
def events(
    draw: st.DrawFn, profile_id: str, when: st.SearchStrategy[datetime] = instants
) -> dict[str, Any]:
    kind = draw(st.sampled_from(["track", "track", "page", "screen", "identify"]))
    return {
        "_id": uuid.uuid4().hex,
        "profile_id": profile_id,
        "type": kind,
        "event": draw(st.sampled_from(TRACK_NAMES)) if kind == "track" else None,
        "name": draw(st.sampled_from(PAGE_NAMES)) if kind in ("page", "screen") else None,
        "properties": draw(st.dictionaries(st.sampled_from(PROPERTIES), stored_values, max_size=2)),
        "timestamp": draw(when),
        "status": draw(st.sampled_from(["applied", "applied", "applied", "pending"])),
    }


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    people = [draw(profiles(i)) for i in range(draw(st.integers(6, 12)))]
    log = [draw(events(p["_id"])) for p in people for _ in range(draw(st.integers(0, 5)))]
    return {
        "profiles": people,
        "events": log,
        "rules": draw(st.lists(definitions, min_size=4, max_size=10)),
    }


@pytest.fixture(scope="module")
def client(mongodb_uri: str) -> Iterator[MongoClient[dict[str, Any]]]:
    """A synchronous client: each example is a few round trips, run one after another."""
    c: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, tz_aware=True)
    with c:
        yield c


def _python_members(
    definition: Definition, db: Any, ids: list[str], people: dict[str, ProfileFacts]
) -> set[str]:
    query = {"profile_id": {"$in": ids}, **event_query(dependencies(definition.rule), now=EVAL_AT)}
    by_profile: dict[str, list[EventFacts]] = defaultdict(list)
    for doc in db.events.find(query):
        by_profile[doc["profile_id"]].append(event_facts(doc))
    return {
        pid
        for pid, facts in people.items()
        if matches(definition.rule, facts, by_profile[pid], now=EVAL_AT)
    }


def _both_ways(
    client: MongoClient[dict[str, Any]], world: dict[str, Any]
) -> list[tuple[dict[str, Any], set[str], set[str]]]:
    """Returns each rule's document with its members by MongoDB and by Python."""
    db = client[f"kindred_rules_{uuid.uuid4().hex[:10]}"]
    results = []
    try:
        db.profiles.insert_many(world["profiles"])
        if world["events"]:
            db.events.insert_many(world["events"])
        db.events.create_index([("profile_id", ASCENDING), ("timestamp", ASCENDING)])
        ids = [p["_id"] for p in world["profiles"]]
        people = {doc["_id"]: profile_facts(doc) for doc in db.profiles.find()}
        for definition in world["rules"]:
            pipeline = [
                {"$match": {"merged_into": None}},
                *to_pipeline(definition.rule, now=EVAL_AT),
            ]
            in_mongo = {doc["_id"] for doc in db.profiles.aggregate(pipeline)}
            in_python = _python_members(definition, db, ids, people)
            results.append((definition.to_document(), in_mongo, in_python))
    finally:
        client.drop_database(db.name)
    return results


@settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(world=worlds())
def test_mongodb_and_python_give_the_same_members(
    client: MongoClient[dict[str, Any]], world: dict[str, Any]
) -> None:
    for document, in_mongo, in_python in _both_ways(client, world):
        assert in_mongo == in_python, document


def test_absent_and_null_properties_are_missing_both_ways(
    client: MongoClient[dict[str, Any]],
) -> None:
    # SecantusDB's `$getField` gives an object for an absent field; the pipeline must not use it.
    properties: list[dict[str, Any]] = [{}, {"category": None}, {"category": "shoes"}]
    world = {
        "profiles": [{"_id": f"p{i}", "merged_into": None} for i in range(3)],
        "events": [
            {
                "_id": f"e{i}",
                "profile_id": f"p{i}",
                "type": "identify",
                "properties": props,
                "timestamp": NOW,
                "status": "applied",
            }
            for i, props in enumerate(properties)
        ],
        "rules": [
            _parsed({"type": "event", "where": [{"property": "category", "op": op}]})
            for op in ("exists", "missing")
        ],
    }
    assert [(m, p) for _, m, p in _both_ways(client, world)] == [
        ({"p2"}, {"p2"}),
        ({"p0", "p1"}, {"p0", "p1"}),
    ]


def test_the_pipeline_returns_profiles_as_stored(client: MongoClient[dict[str, Any]]) -> None:
    db = client[f"kindred_rules_{uuid.uuid4().hex[:10]}"]
    try:
        db.profiles.insert_one({"_id": "p1", "merged_into": None, "traits": {}, "stats": {}})
        db.events.insert_one(
            {
                "_id": "e1",
                "profile_id": "p1",
                "type": "page",
                "name": "Home",
                "properties": {},
                "timestamp": NOW - timedelta(days=1),
                "status": "applied",
            }
        )
        rule = parse_definition(
            {
                "version": 1,
                "rule": {
                    "type": "all",
                    "of": [
                        {"type": "event", "event_type": "page", "within": "7d"},
                        {
                            "type": "since",
                            "anchor": {"event_type": "page"},
                            "then": {"name": "X"},
                            "count": {"max": 0},
                        },
                    ],
                },
            }
        ).rule
        out = list(db.profiles.aggregate(to_pipeline(rule, now=NOW)))
        assert out == [{"_id": "p1", "merged_into": None, "traits": {}, "stats": {}}]
    finally:
        client.drop_database(db.name)


# --- pure properties on the same generators ---------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(definition=definitions)
def test_a_definition_survives_its_document_round_trip(definition: Definition) -> None:
    assert parse_definition(definition.to_document()) == definition


def _datetimes(node: Any) -> Iterator[datetime]:
    if isinstance(node, datetime):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _datetimes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datetimes(value)


def _probes(world: dict[str, Any]) -> list[datetime]:
    # Every instant at which something could happen, give or take a millisecond.
    stamps = set(_datetimes(world["profiles"])) | set(_datetimes(world["events"])) | {NOW}
    shifts = [timedelta(0), *DURATIONS.values()]
    return sorted(
        {
            s + sign * d + n
            for s in stamps
            for d in shifts
            for sign in (-1, 1)
            for n in (-MS, 0 * MS, MS)
        }
    )


@st.composite
def one_profile(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(profiles(0))
    for stat in Stat:  # dates near the edges, for relative bounds to pass
        if not stat.is_counter and draw(st.booleans()):
            doc["stats"][stat.value] = draw(st.sampled_from(_edges()))
    # Events near the window edges, so that most rules have a change coming.
    log = draw(st.lists(events("p0", st.sampled_from(_edges())), max_size=8))
    return {"profiles": [doc], "events": [e for e in log if e["status"] == "applied"]}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(
    definition=st.one_of(definitions, moving_definitions, moving_definitions), world=one_profile()
)
def test_next_change_is_the_first_instant_the_answer_changes(
    definition: Definition, world: dict[str, Any]
) -> None:
    profile = profile_facts(world["profiles"][0])
    facts = [event_facts(e) for e in world["events"]]
    before = matches(definition.rule, profile, facts, now=EVAL_AT)
    change = next_change(definition.rule, profile, facts, now=EVAL_AT)
    assert change is None or change > EVAL_AT
    # Never late: nothing changes before it, checked wherever something could.
    for probe in _probes(world):
        if probe > EVAL_AT and (change is None or probe < change):
            assert matches(definition.rule, profile, facts, now=probe) == before, probe
    if change is not None:
        assert matches(definition.rule, profile, facts, now=change) != before


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(
    definition=st.one_of(definitions, moving_definitions, moving_definitions), world=one_profile()
)
def test_a_rule_sees_the_same_through_its_relevant_events(
    definition: Definition, world: dict[str, Any]
) -> None:
    # The segment service narrows events loaded for many rules to each rule's own.
    profile = profile_facts(world["profiles"][0])
    facts = [event_facts(e) for e in world["events"]]
    own = relevant_events(dependencies(definition.rule), facts, now=EVAL_AT)
    for at in (EVAL_AT, *(p for p in _probes(world) if p > EVAL_AT)):
        assert matches(definition.rule, profile, own, now=at) == matches(
            definition.rule, profile, facts, now=at
        ), at
    assert next_change(definition.rule, profile, own, now=EVAL_AT) == next_change(
        definition.rule, profile, facts, now=EVAL_AT
    )
