"""The segment rule language, in Python alone: validation, semantics, timing, dependencies."""

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import pytest

from profiles.errors import KindredError
from profiles.segments.rules import (
    LANGUAGE_VERSION,
    Condition,
    Dependencies,
    EventFacts,
    InvalidSegmentRule,
    ProfileFacts,
    dependencies,
    event_facts,
    event_query,
    matches,
    next_change,
    parse_definition,
    profile_facts,
    to_pipeline,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
CART_ABANDONERS = {
    "type": "since",
    "anchor": {"name": "Product Added"},
    "elapsed": "48h",
    "then": {"name": "Order Completed"},
    "count": {"max": 0},
}


def rule(doc: dict[str, Any]) -> Condition:
    return parse_definition({"version": LANGUAGE_VERSION, "rule": doc}).rule


def person(
    traits: dict[str, Any] | None = None,
    *,
    stats: dict[str, Any] | None = None,
    computed: dict[str, Any] | None = None,
    consent: dict[str, str] | None = None,
    segments: Sequence[str] = (),
) -> ProfileFacts:
    return ProfileFacts(
        id="p1",
        traits=traits or {},
        stats=stats or {},
        computed=computed or {},
        consent=consent or {},
        segments=frozenset(segments),
    )


def event(
    name: str | None = None, *, ago: timedelta = timedelta(0), type_: str = "track", **props: Any
) -> EventFacts:
    return EventFacts(type=type_, name=name, timestamp=NOW - ago, properties=props)


def holds(
    doc: dict[str, Any],
    profile: ProfileFacts | None = None,
    events: Sequence[EventFacts] = (),
    *,
    now: datetime = NOW,
) -> bool:
    return matches(rule(doc), profile or person(), events, now=now)


def trait(op: str, value: Any = None, key: str = "plan") -> dict[str, Any]:
    doc = {"type": "trait", "key": key, "op": op}
    return doc if value is None else {**doc, "value": value}


def problem(doc: Any) -> str:
    with pytest.raises(InvalidSegmentRule) as caught:
        parse_definition({"version": 1, "rule": doc})
    return caught.value.message


# --- validation ------------------------------------------------------------------------------


def test_a_definition_round_trips_through_its_document() -> None:
    definition = parse_definition({"version": 1, "rule": CART_ABANDONERS})
    document = definition.to_document()
    assert json.loads(json.dumps(document)) == document
    assert parse_definition(document) == definition
    assert document["rule"]["anchor"]["event_type"] == "track"


def test_an_error_is_an_unprocessable_kindred_error_with_its_problems() -> None:
    with pytest.raises(InvalidSegmentRule) as caught:
        parse_definition({"version": 1, "rule": {"type": "all", "of": [trait("equals", 1)]}})
    error = caught.value
    assert isinstance(error, KindredError)
    assert (error.code, error.status) == ("invalid_segment_rule", HTTPStatus.UNPROCESSABLE_ENTITY)
    assert error.problems == (
        (
            "rule.of[0].op",
            "unknown op 'equals' (expected one of eq, ne, in, not_in, gt, gte, lt, lte, "
            "between, exists, missing, contains, prefix)",
        ),
    )


def test_an_unknown_op_is_named_with_its_path() -> None:
    message = problem({"type": "any", "of": [trait("eq", 1), trait("equals", 1)]})
    assert message.startswith("rule.of[1].op: unknown op 'equals' (expected one of eq, ne,")


def test_an_unknown_condition_type_is_named_with_its_path() -> None:
    message = problem({"type": "not", "rule": {"type": "traits", "key": "plan"}})
    assert message.startswith("rule.rule: unknown condition type 'traits' (expected one of all,")


def test_a_condition_without_a_type_is_refused() -> None:
    assert problem({"key": "plan"}).startswith("rule: a condition needs a 'type'")


@pytest.mark.parametrize("key", ["$where", "a.b", "", "a\0b", "x" * 129, "1st"])
def test_operator_like_or_dotted_trait_keys_are_refused(key: str) -> None:
    assert problem(trait("eq", 1, key=key)).startswith(f"rule.key: trait key {key!r} is invalid")


def test_computed_keys_follow_the_trait_key_rules() -> None:
    message = problem({"type": "computed", "key": "$gt", "op": "exists"})
    assert message.startswith("rule.key: trait key '$gt' is invalid")


@pytest.mark.parametrize("name", ["$where", "a.b", "", "a\0b"])
def test_operator_like_or_dotted_property_names_are_refused(name: str) -> None:
    doc = {"type": "event", "where": [{"property": name, "op": "exists"}]}
    assert problem(doc).startswith("rule.where[0].property: ")


@pytest.mark.parametrize("purpose", ["$set", "Email", "a.b", "", "1x"])
def test_bad_consent_purposes_are_refused(purpose: str) -> None:
    assert problem({"type": "consent", "purpose": purpose}).startswith("rule.purpose: purpose")


@pytest.mark.parametrize("segment_id", ["$x", "a.b", "", "a b"])
def test_bad_segment_ids_are_refused(segment_id: str) -> None:
    assert problem({"type": "segment", "id": segment_id}).startswith("rule.id: segment id")


@pytest.mark.parametrize("text", ["30", "30x", "-30d", "1.5h", "0d", "d", " 30d", "99999999d"])
def test_bad_durations_are_refused(text: str) -> None:
    assert problem({"type": "event", "within": text}).startswith("rule.within: ")


@pytest.mark.parametrize("text", ["30d", "", "-1y", "+-1d"])
def test_relative_dates_need_a_sign_and_a_unit(text: str) -> None:
    message = problem({"type": "stat", "key": "last_seen", "op": "lt", "value": {"relative": text}})
    assert message.startswith("rule.value: ")


def test_before_must_be_shorter_than_within() -> None:
    message = problem({"type": "event", "within": "1d", "before": "48h"})
    assert (
        message == "rule.before: '48h' must be shorter than within ('1d'), or the window is empty"
    )


def test_nesting_of_eight_levels_is_allowed_and_of_nine_is_refused() -> None:
    doc: dict[str, Any] = trait("exists")
    for _ in range(7):
        doc = {"type": "not", "rule": doc}
    rule(doc)
    message = problem({"type": "all", "of": [doc]})
    assert message == "rule.of[0]" + ".rule" * 7 + ": conditions nest deeper than 8 levels"


def test_more_than_fifty_conditions_are_refused() -> None:
    rule({"type": "all", "of": [trait("exists")] * 49})
    message = problem({"type": "all", "of": [trait("exists")] * 50})
    assert message == "rule.of[49]: a rule may hold at most 50 conditions"


def test_more_than_twenty_where_filters_are_refused() -> None:
    where = [{"property": f"p{i}", "op": "exists"} for i in range(21)]
    assert problem({"type": "event", "where": where}) == "rule.where: may hold at most 20 items"


def test_in_lists_hold_one_to_a_thousand_values() -> None:
    rule(trait("in", list(range(1000))))
    assert problem(trait("in", list(range(1001)))).startswith("rule.value: op 'in' needs a list")
    assert problem(trait("not_in", [])).startswith("rule.value: op 'not_in' needs a list")


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            trait("eq"),
            "rule.value: op 'eq' needs a value; to test for an absent value use op 'missing'",
        ),
        (trait("exists", 1), "rule.value: op 'exists' takes no value"),
        (trait("gt", True), "rule.value: op 'gt' compares numbers, strings or dates, not booleans"),
        (trait("between", [3, 1]), "rule.value: op 'between' needs low <= high, not [3, 1]"),
        (
            trait("between", [1, "a"]),
            "rule.value: op 'between' needs a low and a high of the same kind",
        ),
        (trait("prefix", 1), "rule.value: op 'prefix' needs a string, not 1"),
        (trait("eq", {"$gt": 1}), "rule.value: {'$gt': 1} is not a value"),
        (trait("eq", [1]), "rule.value: [1] is not a value"),
        (trait("eq", float("inf")), "rule.value: numbers must be finite"),
        (trait("eq", 2**64), "rule.value: 18446744073709551616 is outside the 64-bit"),
        (trait("eq", {"date": "yesterday"}), "rule.value: 'yesterday' is not an ISO 8601"),
    ],
)
def test_values_must_suit_their_op(doc: dict[str, Any], expected: str) -> None:
    assert problem(doc).startswith(expected)


def test_stats_are_numbers_or_dates_and_counters_are_never_missing() -> None:
    orders = {"type": "stat", "key": "orders"}
    assert problem({**orders, "op": "gt", "value": "1"}).startswith(
        "rule.value: this value must be a number"
    )
    assert problem({**orders, "op": "missing"}).startswith("rule.op: stat 'orders' is a counter")
    assert problem({**orders, "op": "prefix", "value": "1"}).startswith(
        "rule.op: op 'prefix' does not apply"
    )
    message = problem({"type": "stat", "key": "event_counts", "op": "exists"})
    assert message.startswith("rule.key: unknown stat 'event_counts' (expected one of event_count,")


def test_event_names_belong_to_track_page_and_screen_events() -> None:
    assert problem({"type": "event", "event_type": "identify", "name": "x"}) == (
        "rule.name: 'identify' events have no name; leave out the name"
    )


def test_unknown_fields_and_versions_are_refused() -> None:
    with pytest.raises(InvalidSegmentRule, match=r"^version: unsupported version 2"):
        parse_definition({"version": 2, "rule": trait("exists")})
    with pytest.raises(InvalidSegmentRule, match=r"^version: is required"):
        parse_definition({"rule": trait("exists")})
    assert problem({**trait("exists"), "equals": 1}) == "rule.equals: unknown field"
    assert problem({"type": "event", "count": {"min": 2, "max": 1}}) == (
        "rule.count: max (1) is below min (2)"
    )
    with pytest.raises(InvalidSegmentRule, match=r"^definition: must be an object"):
        parse_definition([])  # type: ignore[arg-type]


# --- comparisons and missing values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "stored", "expected"),
    [
        ("eq", 2, 2.0, True),
        ("eq", 1, True, False),  # a boolean is not a number
        ("eq", "Pro", "pro", False),  # case-sensitive
        ("eq", "pro", ["pro"], False),  # a list is not its element: use contains
        ("eq", "pro", None, False),
        ("ne", "pro", None, True),  # ne matches missing, as MongoDB's $ne does
        ("ne", 1, "1", True),
        ("ne", 1, 1.0, False),
        ("in", [1, "a"], "a", True),
        ("in", [1, "a"], None, False),
        ("not_in", [1, "a"], None, True),
        ("not_in", [1, "a"], 1.0, False),
        ("gt", 5, 6, True),
        ("gt", 5, "6", False),  # never across kinds
        ("gt", 5, None, False),
        ("lt", 5, None, False),
        ("lt", "b", "a", True),
        ("lt", "a", "B", True),  # strings compare by code point: "B" sorts before "a"
        ("gte", 5, 5, True),
        ("lte", 5, 5.5, False),
        ("lt", 5, float("nan"), True),  # NaN orders below every number, as in BSON
        ("gt", 5, float("nan"), False),
        ("between", [1, 3], 1, True),
        ("between", [1, 3], 3, True),
        ("between", [1, 3], 3.5, False),
        ("between", ["a", "c"], "b", True),
        ("exists", None, 0, True),
        ("exists", None, None, False),
        ("missing", None, None, True),
        ("missing", None, "", False),
        ("contains", "ro", "pro", True),
        ("contains", "RO", "pro", False),
        ("contains", "pro", ["pro", "free"], True),
        ("contains", 2, [1, 2.0], True),
        ("contains", 1, [True], False),
        ("contains", "p", None, False),
        ("prefix", "pr", "pro", True),
        ("prefix", "ro", "pro", False),
        ("prefix", "1", 12, False),
    ],
)
def test_each_op_compares_only_values_of_the_same_kind(
    op: str, value: Any, stored: Any, expected: bool
) -> None:
    traits = {} if stored is None else {"plan": stored}
    assert holds(trait(op, value), person(traits)) is expected


def test_a_null_trait_is_missing() -> None:
    assert holds(trait("missing"), person({"plan": None}))
    assert not holds(trait("exists"), person({"plan": None}))


def test_dates_compare_with_dates_only() -> None:
    birthday = datetime(1990, 5, 1, tzinfo=UTC)
    stored = person({"born": birthday, "born_text": "1990-05-01"})
    assert holds(trait("eq", {"date": "1990-05-01T00:00:00Z"}, key="born"), stored)
    assert holds(trait("lt", {"date": "2000-01-01"}, key="born"), stored)
    # An undeclared trait holding text stays text: a date never equals it.
    assert not holds(trait("eq", {"date": "1990-05-01"}, key="born_text"), stored)
    assert holds(trait("eq", "1990-05-01", key="born_text"), stored)


def test_relative_dates_are_taken_from_now() -> None:
    lapsed = {"type": "stat", "key": "last_seen", "op": "lt", "value": {"relative": "-30d"}}
    assert holds(lapsed, person(stats={"last_seen": NOW - 31 * DAY}))
    assert not holds(lapsed, person(stats={"last_seen": NOW - 30 * DAY}))
    assert not holds(lapsed, person())  # never seen: no date to compare


def test_stat_dates_accept_iso_strings() -> None:
    since_may = {"type": "stat", "key": "first_seen", "op": "gte", "value": "2024-05-01"}
    assert holds(since_may, person(stats={"first_seen": datetime(2024, 5, 2, tzinfo=UTC)}))
    assert parse_definition({"version": 1, "rule": since_may}).to_document()["rule"]["value"] == {
        "date": "2024-05-01T00:00:00.000Z"
    }


def test_counters_read_zero_until_something_is_counted() -> None:
    never_ordered = {"type": "stat", "key": "orders", "op": "eq", "value": 0}
    assert holds(never_ordered, person())
    assert not holds(never_ordered, person(stats={"orders": 2}))


def test_computed_traits_compare_like_traits() -> None:
    champions = {"type": "computed", "key": "rfm_group", "op": "eq", "value": "champions"}
    assert holds(champions, person(computed={"rfm_group": "champions"}))
    assert not holds(champions, person({"rfm_group": "champions"}))


# --- events -------------------------------------------------------------------------------


def test_an_event_window_includes_its_edges() -> None:
    ordered = {"type": "event", "name": "Order Completed", "within": "30d"}
    assert holds(ordered, events=[event("Order Completed", ago=30 * DAY)])
    assert not holds(ordered, events=[event("Order Completed", ago=30 * DAY + MS)])
    # `now` counts in milliseconds, as MongoDB does.
    later = NOW + timedelta(microseconds=999)
    assert holds(ordered, events=[event("Order Completed", ago=30 * DAY)], now=later)


def test_before_ends_the_window_that_long_ago() -> None:
    old_enough = {"type": "event", "name": "Signed Up", "before": "1d"}
    assert holds(old_enough, events=[event("Signed Up", ago=DAY)])
    assert not holds(old_enough, events=[event("Signed Up", ago=DAY - MS)])


def test_counts_are_bounded_on_both_sides() -> None:
    twice = {"type": "event", "name": "Order Completed", "count": {"min": 2, "max": 3}}
    orders = [event("Order Completed", ago=i * HOUR) for i in range(4)]
    assert [holds(twice, events=orders[:n]) for n in range(5)] == [False, False, True, True, False]


def test_did_not_do_is_a_count_of_at_most_zero() -> None:
    no_order = {"type": "event", "name": "Order Completed", "within": "7d", "count": {"max": 0}}
    assert holds(no_order)
    assert holds(no_order, events=[event("Order Completed", ago=8 * DAY)])
    assert not holds(no_order, events=[event("Order Completed", ago=DAY)])


def test_a_name_alone_means_a_track_event() -> None:
    home = {"type": "event", "name": "Home"}
    assert holds(home, events=[event("Home")])
    assert not holds(home, events=[event("Home", type_="page")])
    page = {"type": "event", "event_type": "page", "name": "Home"}
    assert holds(page, events=[event("Home", type_="page")])


def test_a_selector_without_a_name_takes_any_event_of_its_type() -> None:
    visited = {"type": "event", "event_type": "page", "within": "7d"}
    assert holds(visited, events=[event("Pricing", type_="page")])
    assert not holds(visited, events=[event("Pricing", type_="screen")])
    assert holds({"type": "event"}, events=[event(None, type_="identify")])


def test_where_filters_compare_properties() -> None:
    shoes = {
        "type": "event",
        "name": "Product Added",
        "where": [
            {"property": "category", "op": "eq", "value": "shoes"},
            {"property": "price", "op": "gte", "value": 50},
        ],
    }
    assert holds(shoes, events=[event("Product Added", category="shoes", price=80)])
    assert not holds(shoes, events=[event("Product Added", category="shoes", price="80")])
    assert not holds(shoes, events=[event("Product Added", category="shoes")])


def test_cart_abandoners_added_to_cart_over_48_hours_ago_and_did_not_order_since() -> None:
    added_3d = event("Product Added", ago=3 * DAY)
    assert holds(CART_ABANDONERS, events=[added_3d])
    assert holds(CART_ABANDONERS, events=[event("Order Completed", ago=4 * DAY), added_3d])
    assert not holds(CART_ABANDONERS, events=[added_3d, event("Order Completed", ago=2 * DAY)])
    # The last add counts: a recent one restarts the 48 hours.
    assert not holds(CART_ABANDONERS, events=[added_3d, event("Product Added", ago=HOUR)])
    assert not holds(CART_ABANDONERS, events=[event("Product Added", ago=48 * HOUR - MS)])
    assert holds(CART_ABANDONERS, events=[event("Product Added", ago=48 * HOUR)])
    assert not holds(CART_ABANDONERS)  # never added anything


def test_since_counts_only_events_strictly_after_the_anchor() -> None:
    same_moment = [event("Product Added", ago=3 * DAY), event("Order Completed", ago=3 * DAY)]
    assert holds(CART_ABANDONERS, events=same_moment)


def test_since_before_counts_events_before_the_first_anchor() -> None:
    browsed_first = {
        "type": "since",
        "direction": "before",
        "anchor": {"name": "Order Completed"},
        "then": {"event_type": "page"},
        "count": {"min": 2},
    }
    pages = [event("A", ago=5 * DAY, type_="page"), event("B", ago=4 * DAY, type_="page")]
    first_order = event("Order Completed", ago=3 * DAY)
    assert holds(browsed_first, events=[*pages, first_order, event("Order Completed", ago=DAY)])
    later_page = event("C", ago=2 * DAY, type_="page")
    assert not holds(browsed_first, events=[pages[0], first_order, later_page])


# --- combinators and profile state ---------------------------------------------------------


def test_all_any_and_not_combine_conditions() -> None:
    pro, paying = trait("eq", "pro"), {"type": "stat", "key": "orders", "op": "gt", "value": 0}
    pro_payer = person({"plan": "pro"}, stats={"orders": 1})
    free_payer = person({"plan": "free"}, stats={"orders": 1})
    assert holds({"type": "all", "of": [pro, paying]}, pro_payer)
    assert not holds({"type": "all", "of": [pro, paying]}, free_payer)
    assert holds({"type": "any", "of": [pro, paying]}, free_payer)
    assert not holds({"type": "any", "of": [pro, paying]}, person())
    assert holds({"type": "not", "rule": pro}, free_payer)


def test_segment_conditions_read_stored_memberships() -> None:
    vip = {"type": "segment", "id": "seg_vip"}
    assert holds(vip, person(segments=["seg_vip"]))
    assert not holds(vip, person())
    assert holds({**vip, "member": False}, person())


def test_consent_conditions_read_the_stored_status() -> None:
    granted = {"type": "consent", "purpose": "analytics"}
    assert holds(granted, person(consent={"analytics": "granted"}))
    assert not holds(granted, person(consent={"analytics": "revoked"}))
    assert holds({**granted, "status": "denied"}, person(consent={"analytics": "denied"}))


CONTACTABLE_BY_EMAIL = {
    "traits": {"email": "ada@example.com", "email_status": "valid"},
    "consent": {"email_marketing": "granted"},
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, True),
        ({"unsubscribed": False}, True),
        ({"unsubscribed": True}, False),
        ({"email": None}, False),
        ({"email": ""}, False),
        ({"email_status": "invalid"}, False),
        ({"email_status": "blocked"}, False),
        ({"email_status": None}, False),
    ],
)
def test_contactable_by_email_needs_a_valid_address_no_unsubscribe_and_consent(
    change: dict[str, Any], expected: bool
) -> None:
    traits = {**CONTACTABLE_BY_EMAIL["traits"], **change}
    profile = person(traits, consent=CONTACTABLE_BY_EMAIL["consent"])
    assert holds({"type": "contactable", "channel": "email"}, profile) is expected


def test_contactable_by_email_needs_marketing_consent_granted() -> None:
    traits = CONTACTABLE_BY_EMAIL["traits"]
    contactable = {"type": "contactable", "channel": "email"}
    assert not holds(contactable, person(traits))
    assert not holds(contactable, person(traits, consent={"email_marketing": "revoked"}))


def test_contactable_by_sms_reads_the_phone_traits_and_sms_consent() -> None:
    traits = {"phone": "+4712345678", "phone_status": "valid"}
    sms = {"type": "contactable", "channel": "sms"}
    assert holds(sms, person(traits, consent={"sms_marketing": "granted"}))
    assert not holds(sms, person(traits, consent={"email_marketing": "granted"}))
    assert not holds(
        sms, person({**traits, "sms_unsubscribed": True}, consent={"sms_marketing": "granted"})
    )


def test_facts_come_from_stored_documents() -> None:
    seen = datetime(2024, 5, 1, 10, 0, 0, 123_456, tzinfo=UTC)
    facts = profile_facts(
        {
            "_id": "p1",
            "traits": {"plan": {"value": "pro", "observed_at": NOW, "source": "web"}},
            "stats": {"orders": 2, "last_seen": seen},
            "computed": {"cluster": {"value": 3, "computed_at": NOW}},
            "consent": {"email_marketing": {"status": "granted", "at": NOW, "source": "web"}},
            "segments": ["seg_a"],
        }
    )
    assert facts == ProfileFacts(
        id="p1",
        traits={"plan": "pro"},
        stats={"orders": 2, "last_seen": seen.replace(microsecond=123_000)},
        computed={"cluster": 3},
        consent={"email_marketing": "granted"},
        segments=frozenset({"seg_a"}),
    )
    page = {"type": "page", "event": None, "name": "Home", "timestamp": NOW, "properties": None}
    assert event_facts(page) == EventFacts(type="page", name="Home", timestamp=NOW, properties={})
    track = {"type": "track", "event": "Order Completed", "name": None, "timestamp": NOW}
    assert event_facts(track).name == "Order Completed"


# --- the pipeline keeps user input as data ---------------------------------------------------


def test_user_values_reach_the_pipeline_only_as_literals() -> None:
    doc = {
        "type": "all",
        "of": [
            trait("eq", "$traits.secret.value"),
            {
                "type": "event",
                "where": [{"property": "Product Name", "op": "prefix", "value": "$x"}],
            },
        ],
    }
    pipeline = json.dumps(to_pipeline(rule(doc), now=NOW), default=str)
    assert '{"$literal": "$traits.secret.value"}' in pipeline
    assert '{"$literal": "$x"}' in pipeline
    assert '"$properties.Product Name"' in pipeline
    assert pipeline.count("$traits.secret") == 1


def test_a_rule_without_events_compiles_to_one_match() -> None:
    stages = to_pipeline(rule(trait("eq", "pro")), now=NOW)
    assert stages == [{"$match": {"$expr": {"$eq": ["$traits.plan.value", {"$literal": "pro"}]}}}]


def test_conditions_without_events_are_matched_before_the_lookups() -> None:
    doc = {"type": "all", "of": [{"type": "event", "name": "X"}, trait("eq", "pro")]}
    stages = to_pipeline(rule(doc), now=NOW)
    assert [next(iter(s)) for s in stages] == ["$match", "$lookup", "$match", "$unset"]
    assert stages[0] == to_pipeline(rule(trait("eq", "pro")), now=NOW)[0]


# --- next_change -----------------------------------------------------------------------------


def test_next_change_is_when_the_last_counted_event_leaves_the_window() -> None:
    recent_buyer = {"type": "event", "name": "Order Completed", "within": "30d"}
    orders = [event("Order Completed", ago=20 * DAY), event("Order Completed", ago=10 * DAY)]
    # Leaving is one millisecond after the window's edge, which is inclusive.
    assert next_change(rule(recent_buyer), person(), orders, now=NOW) == NOW + 20 * DAY + MS


def test_next_change_is_when_an_event_enters_a_window_ending_in_the_past() -> None:
    old_signup = {"type": "event", "name": "Signed Up", "before": "7d"}
    signup = [event("Signed Up", ago=2 * DAY)]
    assert next_change(rule(old_signup), person(), signup, now=NOW) == NOW + 5 * DAY


def test_next_change_is_when_the_elapsed_delay_passes() -> None:
    added = [event("Product Added", ago=HOUR)]
    assert next_change(rule(CART_ABANDONERS), person(), added, now=NOW) == NOW + 47 * HOUR
    ordered = [*added, event("Order Completed", ago=HOUR - MS)]
    assert next_change(rule(CART_ABANDONERS), person(), ordered, now=NOW) is None


def test_next_change_is_when_a_relative_bound_passes_a_stored_date() -> None:
    lapsed = {"type": "stat", "key": "last_seen", "op": "lt", "value": {"relative": "-30d"}}
    seen = person(stats={"last_seen": NOW - 10 * DAY})
    assert next_change(rule(lapsed), seen, [], now=NOW) == NOW + 20 * DAY + MS
    recent = {**lapsed, "op": "gte"}
    assert next_change(rule(recent), seen, [], now=NOW) == NOW + 20 * DAY + MS


def test_next_change_is_none_when_time_alone_changes_nothing() -> None:
    assert next_change(rule(trait("eq", "pro")), person({"plan": "pro"}), [], now=NOW) is None
    no_order = {"type": "event", "name": "Order Completed", "within": "7d", "count": {"max": 0}}
    old = [event("Order Completed", ago=8 * DAY)]
    assert next_change(rule(no_order), person(), old, now=NOW) is None


def test_next_change_is_after_now_with_microseconds() -> None:
    recent_buyer = {"type": "event", "name": "Order Completed", "within": "1h"}
    orders = [event("Order Completed", ago=HOUR)]
    now = NOW + timedelta(microseconds=500)
    assert next_change(rule(recent_buyer), person(), orders, now=now) == NOW + MS


def test_next_change_counts_in_milliseconds_whatever_the_facts_hold() -> None:
    added_at = NOW - HOUR + timedelta(microseconds=400)
    added = [EventFacts(type="track", name="Product Added", timestamp=added_at)]
    assert added[0].timestamp == NOW - HOUR
    assert next_change(rule(CART_ABANDONERS), person(), added, now=NOW) == NOW + 47 * HOUR
    lapsed = {"type": "stat", "key": "last_seen", "op": "lt", "value": {"relative": "-1h"}}
    seen = person(stats={"last_seen": NOW - timedelta(microseconds=300)})
    assert next_change(rule(lapsed), seen, [], now=NOW) == NOW + HOUR


# --- dependencies and the event query -------------------------------------------------------


def test_dependencies_list_what_a_rule_reads() -> None:
    doc = {
        "type": "all",
        "of": [
            trait("eq", "pro"),
            {"type": "stat", "key": "orders", "op": "gt", "value": 1},
            {"type": "computed", "key": "rfm_group", "op": "exists"},
            {"type": "segment", "id": "seg_vip"},
            {"type": "consent", "purpose": "analytics"},
            {"type": "contactable", "channel": "email"},
            {"type": "event", "name": "Order Completed", "within": "30d"},
        ],
    }
    assert dependencies(rule(doc)) == Dependencies(
        traits=frozenset({"plan", "email", "email_status", "unsubscribed"}),
        stats=frozenset({"orders"}),
        computed=frozenset({"rfm_group"}),
        event_names=frozenset({"Order Completed"}),
        any_event=False,
        segments=frozenset({"seg_vip"}),
        consent=frozenset({"analytics", "email_marketing"}),
        time_based=True,
        lookback=30 * DAY,
        event_types=frozenset({"track"}),
    )


@pytest.mark.parametrize(
    ("doc", "lookback"),
    [
        (trait("eq", "pro"), timedelta(0)),
        ({"type": "event", "name": "A", "within": "7d"}, 7 * DAY),
        (
            {
                "type": "any",
                "of": [{"type": "event", "within": "1h"}, {"type": "event", "within": "48h"}],
            },
            48 * HOUR,
        ),
        (
            {
                "type": "any",
                "of": [{"type": "event", "within": "1h"}, {"type": "event", "name": "A"}],
            },
            None,
        ),
        (CART_ABANDONERS, None),
    ],
)
def test_lookback_is_the_longest_window_or_all_history(
    doc: dict[str, Any], lookback: timedelta | None
) -> None:
    assert dependencies(rule(doc)).lookback == lookback


def test_time_based_rules_are_those_with_windows_delays_or_relative_dates() -> None:
    assert not dependencies(rule({"type": "event", "name": "A"})).time_based
    assert not dependencies(rule({**CART_ABANDONERS, "elapsed": None})).time_based
    assert dependencies(rule(CART_ABANDONERS)).time_based
    assert dependencies(rule(trait("in", [{"relative": "-1d"}], key="renewal"))).time_based


def test_any_event_is_a_selector_without_a_name() -> None:
    deps = dependencies(rule({"type": "event", "event_type": "page"}))
    assert deps.any_event
    assert (deps.event_names, deps.event_types) == (frozenset(), frozenset({"page"}))


def test_the_event_query_narrows_by_name_for_track_events_only() -> None:
    deps = dependencies(rule(CART_ABANDONERS))
    assert event_query(deps, now=NOW) == {
        "status": "applied",
        "type": "track",
        "event": {"$in": ["Order Completed", "Product Added"]},
    }


def test_the_event_query_narrows_by_time_and_type() -> None:
    pages = dependencies(
        rule({"type": "event", "event_type": "page", "name": "Home", "within": "7d"})
    )
    assert event_query(pages, now=NOW) == {
        "status": "applied",
        "timestamp": {"$gte": NOW - 7 * DAY},
        "type": "page",
        "name": {"$in": ["Home"]},
    }
    mixed = dependencies(
        rule(
            {
                "type": "any",
                "of": [{"type": "event", "name": "A"}, {"type": "event", "event_type": "screen"}],
            }
        )
    )
    assert event_query(mixed, now=NOW) == {
        "status": "applied",
        "type": {"$in": ["screen", "track"]},
    }
    assert event_query(dependencies(rule({"type": "event"})), now=NOW) == {"status": "applied"}


def test_the_event_query_loads_nothing_for_rules_without_events() -> None:
    deps = dependencies(rule(trait("eq", "pro")))
    assert not deps.reads_events
    assert event_query(deps, now=NOW) == {"status": "applied", "type": {"$in": []}}


def test_dependencies_of_several_rules_unite() -> None:
    a = dependencies(rule({"type": "event", "name": "A", "within": "7d"}))
    b = dependencies(rule({"type": "event", "event_type": "page", "within": "30d"}))
    both = a.union(b)
    assert both.any_event
    assert (both.event_names, both.lookback) == (frozenset({"A"}), 30 * DAY)
    assert event_query(both, now=NOW)["type"] == {"$in": ["page", "track"]}
    assert a.union(dependencies(rule(CART_ABANDONERS))).lookback is None
