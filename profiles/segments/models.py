"""Segments' plain data: definitions, memberships and their changes."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Change(StrEnum):
    """How a profile's membership of a segment changed."""

    ENTERED = "entered"
    EXITED = "exited"


@dataclass(frozen=True)
class Transition:
    """One profile entering or leaving one segment, and why.

    `cause` says what made it: `{"kind": "event", "event_id": …}` for an applied
    event, `{"kind": "time", "rule": …}` for a time rule coming due,
    `{"kind": "recompute"}` for a full evaluation, `{"kind": "merge", …}`.
    """

    segment_id: str
    segment_version: int
    profile_id: str
    change: Change
    at: datetime
    cause: Mapping[str, Any] = field(default_factory=dict)
