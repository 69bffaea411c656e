"""Signatures: what Kindred sends verifies, and anything else does not."""

import pytest

from profiles.webhooks import signing

SECRET = "whsec_test-secret"
BODY = b'{"id":"whd_1","type":"segment.entered"}'
NOW = 1_750_000_000


def test_a_signed_body_verifies_and_returns_its_time() -> None:
    header = signing.sign(SECRET, body=BODY, timestamp=NOW)

    assert signing.verify(SECRET, body=BODY, header=header, now=NOW + 10) == NOW


def test_the_header_is_the_hmac_of_time_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()

    assert signing.sign(SECRET, body=BODY, timestamp=NOW) == f"t={NOW},v1={expected}"


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        ("whsec_other", BODY, NOW),  # another secret
        (SECRET, BODY + b" ", NOW),  # a changed body
        (SECRET, BODY, NOW + 301),  # too late: a replay
        (SECRET, BODY, NOW - 301),  # from the future
    ],
)
def test_a_signature_that_does_not_fit_is_refused(secret: str, body: bytes, now: int) -> None:
    header = signing.sign(SECRET, body=BODY, timestamp=NOW)

    with pytest.raises(signing.InvalidSignature):
        signing.verify(secret, body=body, header=header, now=now)


@pytest.mark.parametrize(
    "header", [None, "", "garbage", "t=abc,v1=00", f"t={NOW}", "v1=00", f"t={NOW},v1=00"]
)
def test_a_malformed_header_is_refused(header: str | None) -> None:
    with pytest.raises(signing.InvalidSignature):
        signing.verify(SECRET, body=BODY, header=header, now=NOW)


def test_any_of_several_signatures_may_match_while_a_secret_is_replaced() -> None:
    old = signing.sign("whsec_old", body=BODY, timestamp=NOW)
    new = signing.signature(SECRET, body=BODY, timestamp=NOW)

    assert signing.verify(SECRET, body=BODY, header=f"{old},v1={new}", now=NOW) == NOW


def test_secrets_are_new_each_time_and_long() -> None:
    a, b = signing.new_secret(), signing.new_secret()

    assert a != b
    assert a.startswith("whsec_")
    assert len(a) == len("whsec_") + 43
