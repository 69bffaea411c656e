"""Input rules, outbox ids and the body a receiver gets: no I/O."""

import json
from datetime import UTC, datetime

import pytest

from profiles.segments.models import Change, Transition
from profiles.webhooks.errors import InvalidWebhook
from profiles.webhooks.models import (
    Delivery,
    DeliveryStatus,
    body,
    check_changes,
    check_segment_id,
    check_url,
    delivery_id,
)

AT = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/kindred",
        "http://127.0.0.1:8080/in?token=abc",
        "HTTPS://Example.COM",
        "https://[::1]:9000/hook",
        "https://bücher.example/hook",
    ],
)
def test_a_good_url_is_kept_as_given(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://token@example.com/", "credentials"),
        ("https://", "host"),
        ("https://exa_mple.com/", "host"),
        ("https://-bad.example/", "host"),
        ("https://[nope]/", "malformed"),
        ("https://example.com:0/", "port"),
        ("https://example.com:70000/", "malformed"),
        ("https://example.com/a b", "whitespace"),
        ("https://example.com/\n", "whitespace"),
        ("https://example.com/#frag", "fragment"),
        ("https://example.com/" + "x" * 2048, "longer"),
        ("", "required"),
    ],
)
def test_a_bad_url_is_refused_with_the_reason(url: str, says: str) -> None:
    with pytest.raises(InvalidWebhook, match=says) as refused:
        check_url(url)

    assert refused.value.field == "url"


@pytest.mark.parametrize("segment_id", ["", "a" * 201, "vip\n", "v ip"])
def test_a_bad_segment_id_is_refused_naming_it(segment_id: str) -> None:
    with pytest.raises(InvalidWebhook) as refused:
        check_segment_id(segment_id)

    assert refused.value.field == "segmentId"


def test_no_change_at_all_is_refused() -> None:
    with pytest.raises(InvalidWebhook) as refused:
        check_changes([])

    assert refused.value.field == "changes"


def _transition(**overrides: object) -> Transition:
    values: dict[str, object] = {
        "segment_id": "vip",
        "segment_version": 2,
        "profile_id": "prf_1",
        "change": Change.ENTERED,
        "at": AT,
    }
    values.update(overrides)
    return Transition(**values)  # type: ignore[arg-type]


def test_an_outbox_id_is_the_same_on_a_retry_and_differs_per_subscription() -> None:
    first = delivery_id("whk_a", _transition())
    # Read back from MongoDB, the time has lost its microseconds: still the same row.
    again = delivery_id("whk_a", _transition(at=AT.replace(microsecond=123000)))

    assert first == again
    assert first.startswith("whd_")
    assert delivery_id("whk_b", _transition()) != first
    assert delivery_id("whk_a", _transition(change=Change.EXITED)) != first


def test_outbox_ids_sort_by_the_time_of_the_change() -> None:
    early = delivery_id("whk_z", _transition(at=AT))
    late = delivery_id("whk_a", _transition(at=AT.replace(second=16)))

    assert early < late


def test_the_body_is_compact_json_with_the_documented_fields() -> None:
    delivery = Delivery(
        id="whd_1",
        subscription_id="whk_1",
        segment_id="vip",
        segment_version=2,
        profile_id="prf_1",
        change=Change.EXITED,
        at=AT,
        cause={"kind": "time", "rule": "no purchase for 60 days", "due": AT},
        status=DeliveryStatus.PENDING,
        attempts=0,
        created_at=AT,
    )

    sent = body(delivery)

    assert b" " not in sent.replace(b"no purchase for 60 days", b"")
    assert json.loads(sent) == {
        "id": "whd_1",
        "type": "segment.exited",
        "segment": {"id": "vip", "version": 2},
        "profile_id": "prf_1",
        "at": "2025-03-01T12:30:15.123000Z",
        "cause": {
            "kind": "time",
            "rule": "no purchase for 60 days",
            "due": "2025-03-01T12:30:15.123000Z",
        },
    }
