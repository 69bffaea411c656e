"""Validation with no I/O: the key-safety invariant and skew correction, over generated input."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.ingest.models import EventType, Limits, Rejection, validate_event

RECEIVED = datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
LIMITS = Limits()

keys = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["$where", "$gt", "a.b", ".", "x\0y", "ok", "$", "user.id"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=20,
)


def unsafe(key: str) -> bool:
    return key.startswith("$") or "." in key or "\0" in key


def all_keys(value: object) -> list[str]:
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in (key, *all_keys(item))]
    if isinstance(value, list):
        return [k for item in value for k in all_keys(item)]
    return []


@given(properties=st.dictionaries(keys, json_values, max_size=4), context=json_values)
def test_no_unsafe_key_ever_reaches_an_event_document(properties: Any, context: Any) -> None:
    item = {"type": "track", "userId": "u", "event": "E", "properties": properties}
    if isinstance(context, dict):
        item["context"] = context
    outcome = validate_event(item, source="web", received_at=RECEIVED, limits=LIMITS)
    if isinstance(outcome, Rejection):
        assert isinstance(json.loads(outcome.raw), dict)
        return
    assert not any(unsafe(k) for k in all_keys(outcome))
    assert not any(unsafe(k) for k in all_keys(item)), "an unsafe key was let through"


@given(
    timestamp=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    delay_ms=st.integers(0, 10**9),
)
def test_skew_correction_keeps_the_interval_to_sending(timestamp: datetime, delay_ms: int) -> None:
    sent = timestamp + timedelta(milliseconds=delay_ms)
    item = {
        "userId": "u",
        "event": "E",
        "timestamp": timestamp.isoformat(),
        "sentAt": sent.isoformat(),
    }
    outcome = validate_event(
        item, source="web", received_at=RECEIVED, limits=LIMITS, forced_type=EventType.TRACK
    )
    assert not isinstance(outcome, Rejection), outcome
    original = timestamp.replace(microsecond=timestamp.microsecond // 1000 * 1000)
    assert outcome["original_timestamp"] == original
    assert outcome["timestamp"] == RECEIVED - (outcome["sent_at"] - original)


def test_an_integer_outside_64_bits_is_rejected_naming_the_path() -> None:
    item = {"type": "track", "userId": "u", "event": "E", "properties": {"n": [2**64]}}
    outcome = validate_event(item, source="web", received_at=RECEIVED, limits=LIMITS)
    assert isinstance(outcome, Rejection)
    assert outcome.reason.startswith("properties.n[0]: integer")


def test_a_non_object_item_is_rejected() -> None:
    outcome = validate_event("track", source="web", received_at=RECEIVED, limits=LIMITS, index=3)
    assert isinstance(outcome, Rejection)
    assert outcome.index == 3
    assert outcome.reason == "event: must be a JSON object"
    assert outcome.raw == '"track"'


def test_a_message_id_over_100_characters_is_rejected() -> None:
    item = {"type": "track", "userId": "u", "event": "E", "messageId": "m" * 101}
    outcome = validate_event(item, source="web", received_at=RECEIVED, limits=LIMITS)
    assert isinstance(outcome, Rejection)
    assert outcome.reason.startswith("messageId:")
    assert outcome.message_id == "m" * 101
