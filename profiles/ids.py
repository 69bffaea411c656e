"""Prefixed, time-sortable ids (ULID layout: 48-bit milliseconds, 80 random bits)."""

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str, *, now_ms: int | None = None, random: int | None = None) -> str:
    """Returns `prefix_` plus 26 Crockford base-32 characters that sort by creation time.

    `random` replaces the 80 random bits, for ids that must come out the same on a retry.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    low = int.from_bytes(os.urandom(10), "big") if random is None else random % (1 << 80)
    n = (ms << 80) | low
    chars = []
    for _ in range(26):
        n, r = divmod(n, 32)
        chars.append(_CROCKFORD[r])
    return f"{prefix}_{''.join(reversed(chars))}"


def new_profile_id() -> str:
    """Returns a new profile id such as `prf_01JD…`."""
    return new_id("prf")
