"""Webhook signatures: what Kindred sends and how a receiver checks it (standard library only).

A request carries `Kindred-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, the
HMAC keyed with the subscription's secret (its UTF-8 bytes) over `f"{t}.{body}"`,
the body being the exact bytes received. A receiver can copy this module as is.
"""

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "Kindred-Signature"
ID_HEADER = "Kindred-Webhook-Id"
SECRET_PREFIX = "whsec_"
# How far a signature's time may be from the receiver's clock, either way.
DEFAULT_TOLERANCE_S = 300


class InvalidSignature(ValueError):
    """A request's signature is missing, malformed, stale, or does not match."""


def new_secret() -> str:
    """Returns a new signing secret, `whsec_` and 43 URL-safe characters (256 bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, *, body: bytes, timestamp: int) -> str:
    """Returns the hex HMAC-SHA256 of `f"{timestamp}.{body}"` under the secret."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, *, body: bytes, timestamp: int) -> str:
    """Returns the `Kindred-Signature` header value for a body sent at `timestamp`."""
    return f"t={timestamp},v1={signature(secret, body=body, timestamp=timestamp)}"


def verify(
    secret: str,
    *,
    body: bytes,
    header: str | None,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> int:
    """Returns the signed timestamp if the header signs the body; raises `InvalidSignature`.

    Several `v1=` entries are accepted (any one may match), so a sender can sign
    with two secrets while one replaces the other. The timestamp must be within
    `tolerance_s` of `now` (default: this machine's clock), which bounds replays;
    dedupe on `Kindred-Webhook-Id` as well, since delivery is at least once.
    """
    if not header:
        raise InvalidSignature(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise InvalidSignature("the signature header is malformed")
        if key == "t":
            if not value.isdigit():
                raise InvalidSignature("the signature timestamp is not a number")
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise InvalidSignature("the signature header lacks t= or v1=")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise InvalidSignature("the signature timestamp is outside the tolerance")
    expected = signature(secret, body=body, timestamp=timestamp)
    # Compare every candidate, in constant time, so timing tells nothing.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise InvalidSignature("the signature does not match")
    return timestamp
