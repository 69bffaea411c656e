"""Deterministic A/B and holdout assignment: a stable hash, no stored state."""

import hashlib
import re
from collections.abc import Sequence
from http import HTTPStatus

from profiles.errors import KindredError

HOLDOUT = "holdout"
MAX_ARMS = 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_NAME_RULE = "1 to 64 letters, digits, `_ . : -`, starting with a letter or digit"


class InvalidExperiment(KindredError):
    """An experiment's name, arms or holdout share is unusable; the message names which."""

    code = "invalid_experiment"
    status = HTTPStatus.UNPROCESSABLE_ENTITY


def check_experiment(experiment: str, arms: Sequence[str], holdout: float) -> None:
    """Raises `InvalidExperiment` naming the argument if an experiment is ill-formed."""
    if not _NAME.match(experiment):
        raise InvalidExperiment(
            "experiment: 1 to 64 letters, digits, `_ . : -`, starting alphanumeric"
        )
    if not 1 <= len(arms) <= MAX_ARMS or len(set(arms)) != len(arms):
        raise InvalidExperiment(f"arms: 1 to {MAX_ARMS} distinct names")
    if any(not _NAME.match(arm) or arm == HOLDOUT for arm in arms):
        raise InvalidExperiment(
            f"arms: each 1 to 64 letters, digits, `_ . : -`, and not `{HOLDOUT}`"
        )
    if not 0 <= holdout < 1:
        raise InvalidExperiment("holdout: a share from 0 (none) up to, not including, 1")


def variant(
    profile_id: str,
    experiment: str,
    *,
    arms: Sequence[str] = ("control", "treatment"),
    holdout: float = 0.0,
) -> str:
    """Returns the profile's arm in an experiment, or `holdout`; the same every time.

    The position comes from SHA-256 of `experiment:profile_id`, so assignments
    are independent between experiments and need no storage. The holdout takes
    the first `holdout` share of positions; the arms split the rest evenly.
    """
    check_experiment(experiment, arms, holdout)
    digest = hashlib.sha256(f"{experiment}:{profile_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if position < holdout:
        return HOLDOUT
    share = (position - holdout) / (1 - holdout)
    return arms[min(int(share * len(arms)), len(arms) - 1)]
