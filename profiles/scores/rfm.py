"""RFM scoring rules with no I/O: quintiles from ranks, and the named groups of the R×FM grid.

A profile that ordered at least once gets three scores from 1 to 5, 5 best:
recency (fewest whole days since the last order), frequency (most orders),
monetary (most revenue). A score is `1 + floor(5 × w / n)`, where `n` profiles
are scored and `w` of them are strictly worse on that measure. Ties therefore
always share a score, and which score a value gets depends only on the values,
never on ids or storage order. A value shared by many profiles takes the score
of its lowest position: when most customers ordered once, they all get F = 1.

The group comes from R and FM = ⌈(F + M) / 2⌉ on the grid in `GRID`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

QUINTILES = 5


class RfmGroup(StrEnum):
    """The named RFM groups; the value is what `computed.rfm_group` holds."""

    CHAMPIONS = "Champions"
    LOYAL_CUSTOMERS = "Loyal Customers"
    POTENTIAL_LOYALIST = "Potential Loyalist"
    NEW_CUSTOMERS = "New Customers"
    PROMISING = "Promising"
    NEED_ATTENTION = "Need Attention"
    ABOUT_TO_SLEEP = "About To Sleep"
    AT_RISK = "At Risk"
    CANNOT_LOSE_THEM = "Cannot Lose Them"
    HIBERNATING = "Hibernating"
    LOST = "Lost"
    # Live profiles that never ordered: prospects, not scored.
    NO_PURCHASES = "No Purchases"


_G = RfmGroup
# R (row, 5 first) × FM (column, 1 to 5). The widely used 5×5 grid of the
# RFM segment map, with its bottom-left corner split: R = 1 is Lost, R = 2 Hibernating.
GRID: Mapping[int, tuple[RfmGroup, RfmGroup, RfmGroup, RfmGroup, RfmGroup]] = {
    5: (_G.NEW_CUSTOMERS, _G.POTENTIAL_LOYALIST, _G.POTENTIAL_LOYALIST, _G.CHAMPIONS, _G.CHAMPIONS),
    4: (
        _G.PROMISING,
        _G.POTENTIAL_LOYALIST,
        _G.POTENTIAL_LOYALIST,
        _G.LOYAL_CUSTOMERS,
        _G.LOYAL_CUSTOMERS,
    ),
    3: (
        _G.ABOUT_TO_SLEEP,
        _G.ABOUT_TO_SLEEP,
        _G.NEED_ATTENTION,
        _G.LOYAL_CUSTOMERS,
        _G.LOYAL_CUSTOMERS,
    ),
    2: (_G.HIBERNATING, _G.HIBERNATING, _G.AT_RISK, _G.AT_RISK, _G.CANNOT_LOSE_THEM),
    1: (_G.LOST, _G.LOST, _G.AT_RISK, _G.AT_RISK, _G.CANNOT_LOSE_THEM),
}


def quintile(rank: int, scored: int) -> int:
    """Returns the 1–5 score of a value whose competition rank is `rank` (1: worst) of `scored`.

    A competition rank is one more than the number of values strictly worse, so
    tied values share it; the database's `$rank` computes the same.
    """
    if not 1 <= rank <= scored:
        raise ValueError(f"rank {rank} is not between 1 and {scored}")
    return 1 + (QUINTILES * (rank - 1)) // scored


def fm_score(frequency: int, monetary: int) -> int:
    """Returns the FM score: the mean of F and M, rounded half up."""
    return (frequency + monetary + 1) // 2


def group_of(recency: int, frequency: int, monetary: int) -> RfmGroup:
    """Returns the named group of R, F and M scores (each 1–5)."""
    for score in (recency, frequency, monetary):
        if not 1 <= score <= QUINTILES:
            raise ValueError(f"RFM scores are 1 to {QUINTILES}, not {score}")
    return GRID[recency][fm_score(frequency, monetary) - 1]


@dataclass(frozen=True)
class RfmInput:
    """What RFM reads of one ordering profile."""

    days_since_order: int
    orders: int
    revenue_cents: int


@dataclass(frozen=True)
class RfmScore:
    """One profile's RFM scores."""

    profile_id: str
    recency: int
    frequency: int
    monetary: int

    @property
    def code(self) -> str:
        """Returns the three scores as one string, such as "545"."""
        return f"{self.recency}{self.frequency}{self.monetary}"

    @property
    def group(self) -> RfmGroup:
        """Returns the profile's named group."""
        return group_of(self.recency, self.frequency, self.monetary)


def competition_ranks(values: Mapping[str, float]) -> dict[str, int]:
    """Returns each key's competition rank by ascending value: 1 + how many are strictly lower."""
    ordered = sorted(values.values())
    ranks: dict[float, int] = {}
    for position, value in enumerate(ordered, start=1):
        ranks.setdefault(value, position)
    return {key: ranks[value] for key, value in values.items()}


def score_all(inputs: Mapping[str, RfmInput]) -> dict[str, RfmScore]:
    """Returns every profile's scores, ranked among these profiles (the database does the same)."""
    n = len(inputs)
    # Ranked worst first: more days since the last order is worse.
    recency = competition_ranks({k: -v.days_since_order for k, v in inputs.items()})
    frequency = competition_ranks({k: v.orders for k, v in inputs.items()})
    monetary = competition_ranks({k: v.revenue_cents for k, v in inputs.items()})
    return {
        key: RfmScore(
            profile_id=key,
            recency=quintile(recency[key], n),
            frequency=quintile(frequency[key], n),
            monetary=quintile(monetary[key], n),
        )
        for key in inputs
    }
