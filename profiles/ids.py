"""Prefixed, time-sortable ids (ULID layout: 48-bit milliseconds, 80 random bits)."""

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """Returns `prefix_` plus 26 Crockford base-32 characters that sort by creation time."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    n = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        n, r = divmod(n, 32)
        chars.append(_CROCKFORD[r])
    return f"{prefix}_{''.join(reversed(chars))}"


def new_profile_id() -> str:
    """Returns a new profile id such as `prf_01JD…`."""
    return new_id("prf")
