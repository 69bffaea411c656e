"""Behavioural clusters with no I/O: features, standardisation, k-means, plain descriptions.

Each live profile with events becomes one row of features (see `FEATURES` and
docs/scores.md). Counts and money are skewed, so they are log1p'd before every
column is standardised to z-scores. K-means (scikit-learn, fixed seed, 10
initialisations) clusters the rows; k is fixed or the one with the best
silhouette in a range. Clusters are named c1…ck in a deterministic order, so the
same data and seed always give the same labels.
"""

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from http import HTTPStatus

import numpy as np
from numpy.typing import NDArray

from profiles.errors import KindredError

DEFAULT_SEED = 7
DEFAULT_K_MIN = 2
DEFAULT_K_MAX = 8
DEFAULT_CATEGORIES = 5
N_INIT = 10
# Silhouette costs O(n²): above this many profiles it is estimated on a seeded sample.
SILHOUETTE_SAMPLE = 5_000
# A centroid this many standard deviations from the mean is worth a phrase.
NOTABLE_Z = 0.5
MAX_PHRASES = 4
CATEGORY_PREFIX = "category:"
MAX_CATEGORY_CHARS = 60
DAY_SECONDS = 86_400

Matrix = NDArray[np.float64]


class Feature(StrEnum):
    """The features every profile has; category shares are added per run."""

    RECENCY = "recency_days"
    FREQUENCY = "orders"
    MONETARY = "revenue"
    OPEN_RATE = "email_open_rate"
    CLICK_RATE = "email_click_rate"
    SESSION_DEPTH = "session_depth"


FEATURES: tuple[Feature, ...] = tuple(Feature)
# Long-tailed: a few customers have hundreds of orders or days away.
_LOGGED = frozenset({Feature.RECENCY, Feature.FREQUENCY, Feature.MONETARY, Feature.SESSION_DEPTH})


class NotEnoughProfiles(KindredError):
    """There are too few distinct profiles to form the clusters asked for."""

    code = "not_enough_profiles"
    status = HTTPStatus.CONFLICT


@dataclass(frozen=True, slots=True)
class Activity:
    """What clustering reads of one profile: its stats and its events' days and categories."""

    profile_id: str
    last_seen: datetime
    orders: int = 0
    revenue_cents: int = 0
    email_opens: int = 0
    email_clicks: int = 0
    emails_delivered: int = 0
    views: int = 0  # page and screen views
    active_days: int = 0  # distinct UTC days with an event
    categories: Mapping[str, int] = field(default_factory=dict)  # product events per category


@dataclass(frozen=True)
class Features:
    """One row per profile (in id order), one column per feature, in original units."""

    profile_ids: tuple[str, ...]
    names: tuple[str, ...]
    values: Matrix


def category_feature(category: str) -> str:
    """Returns the feature name of a category's share."""
    return f"{CATEGORY_PREFIX}{category}"


def top_categories(activities: Sequence[Activity], n: int) -> tuple[str, ...]:
    """Returns the `n` categories with the most product events, ties by name."""
    totals: Counter[str] = Counter()
    for activity in activities:
        totals.update(activity.categories)
    return tuple(sorted(totals, key=lambda c: (-totals[c], c))[:n])


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole > 0 else 0.0


def feature_row(activity: Activity, *, now: datetime, categories: Sequence[str]) -> list[float]:
    """Returns one profile's features in original units, in `FEATURES` then category order."""
    product_events = sum(activity.categories.values())
    return [
        max(0.0, (now - activity.last_seen).total_seconds() / DAY_SECONDS),
        float(activity.orders),
        activity.revenue_cents / 100,
        # Opens per delivered email; an ESP that reports no deliveries counts each open as one.
        _ratio(activity.email_opens, max(activity.emails_delivered, activity.email_opens)),
        # Click-to-open rate.
        _ratio(activity.email_clicks, max(activity.email_opens, activity.email_clicks)),
        # Page and screen views per active day: sessions are not derived yet.
        _ratio(activity.views, activity.active_days),
        *(_ratio(activity.categories.get(c, 0), product_events) for c in categories),
    ]


def features(
    activities: Sequence[Activity], *, now: datetime, categories: Sequence[str]
) -> Features:
    """Returns the feature matrix of the profiles, rows sorted by profile id."""
    ordered = sorted(activities, key=lambda a: a.profile_id)
    names = (*FEATURES, *(category_feature(c) for c in categories))
    rows = [feature_row(a, now=now, categories=categories) for a in ordered]
    values = np.array(rows, dtype=np.float64).reshape(len(ordered), len(names))
    return Features(tuple(a.profile_id for a in ordered), tuple(names), values)


def standardise(found: Features) -> Matrix:
    """Returns z-scores of the features, log1p'd first where skewed; constant columns are 0."""
    logged = np.array([name in _LOGGED for name in found.names])
    values = np.where(logged, np.log1p(found.values), found.values)
    mean = values.mean(axis=0) if len(values) else np.zeros(len(found.names))
    std = values.std(axis=0) if len(values) else np.ones(len(found.names))
    safe = np.where(std > 0, std, 1.0)
    z: Matrix = (values - mean) / safe
    return z


def distinct_rows(z: Matrix) -> int:
    """Returns how many different rows the matrix has: k-means cannot find more clusters."""
    return len(np.unique(z, axis=0)) if len(z) else 0


def candidate_ks(distinct: int, *, k: int | None, k_min: int, k_max: int) -> list[int]:
    """Returns the k values to try; raises `NotEnoughProfiles` if none fits the data."""
    if k is not None:
        if k < 1:
            raise ValueError("k must be at least 1")
        if k > distinct:
            raise NotEnoughProfiles(
                f"{k} clusters need at least {k} different profiles; there are {distinct}"
            )
        return [k]
    if not 2 <= k_min <= k_max:
        raise ValueError("the k range must satisfy 2 <= k_min <= k_max")
    # The silhouette is defined for 2 <= k <= n - 1.
    top = min(k_max, distinct - 1)
    if top < k_min:
        raise NotEnoughProfiles(
            f"choosing k in {k_min}..{k_max} needs at least {k_min + 1} different profiles; "
            f"there are {distinct}"
        )
    return list(range(k_min, top + 1))


@dataclass(frozen=True)
class Fit:
    """One k-means fit: each row's cluster index and the fit's silhouette."""

    k: int
    labels: NDArray[np.int64]
    silhouette: float | None


def fit(z: Matrix, k: int, *, seed: int) -> Fit:
    """Runs k-means with `k` clusters and scores it; CPU-bound, so callers run it in a thread."""
    # Imported here: scikit-learn takes seconds to import, and most commands never cluster.
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    model = KMeans(n_clusters=k, random_state=seed, n_init=N_INIT).fit(z)
    labels = np.asarray(model.labels_, dtype=np.int64)
    n = len(z)
    silhouette = None
    if 2 <= len(set(labels.tolist())) <= n - 1:
        sample = SILHOUETTE_SAMPLE if n > SILHOUETTE_SAMPLE else None
        try:
            silhouette = float(silhouette_score(z, labels, sample_size=sample, random_state=seed))
        except ValueError:
            silhouette = None  # a sample that drew a single cluster: this k cannot be scored
    return Fit(k=k, labels=labels, silhouette=silhouette)


def best(fits: Sequence[Fit]) -> Fit:
    """Returns the fit with the highest silhouette; on a tie, the smaller k."""
    return max(fits, key=lambda f: (-math.inf if f.silhouette is None else f.silhouette, -f.k))


@dataclass(frozen=True)
class Cluster:
    """A named cluster: its members, centroid in original units and in z-scores, description."""

    label: str
    size: int
    centroid: Mapping[str, float]
    z: Mapping[str, float]
    description: str
    members: tuple[str, ...]


def name_clusters(found: Features, z: Matrix, chosen: Fit) -> list[Cluster]:
    """Returns the clusters named c1…ck: most revenue first, then orders, recency, size, ids."""
    unnamed = []
    for index in sorted(set(chosen.labels.tolist())):
        rows = np.flatnonzero(chosen.labels == index)
        members = tuple(found.profile_ids[i] for i in rows)
        centroid = dict(zip(found.names, found.values[rows].mean(axis=0).tolist(), strict=True))
        centre = dict(zip(found.names, z[rows].mean(axis=0).tolist(), strict=True))
        unnamed.append((centroid, centre, members))
    unnamed.sort(
        key=lambda c: (
            -c[0][Feature.MONETARY],
            -c[0][Feature.FREQUENCY],
            c[0][Feature.RECENCY],
            -len(c[2]),
            min(c[2]),
        )
    )
    return [
        Cluster(
            label=f"c{n}",
            size=len(members),
            centroid=centroid,
            z=centre,
            description=describe(centre, centroid),
            members=members,
        )
        for n, (centroid, centre, members) in enumerate(unnamed, start=1)
    ]


def _phrase(name: str, z: float, value: float) -> str | None:
    high = z > 0
    if name.startswith(CATEGORY_PREFIX):
        category = name.removeprefix(CATEGORY_PREFIX)
        if not high:
            return None  # browsing less of one category says little
        return f"mostly {category}" if value >= 0.5 else f"leans to {category}"
    match name:
        case Feature.RECENCY:
            return "not seen for a long time" if high else "recently active"
        case Feature.FREQUENCY:
            if not high and value == 0:
                return "never ordered"
            return "high frequency" if high else "low frequency"
        case Feature.MONETARY:
            if not high and value == 0:
                return None  # "never ordered" says it
            return "high spend" if high else "low spend"
        case Feature.OPEN_RATE:
            if high:
                return "opens most emails" if value >= 0.5 else "opens more emails than most"
            return "rarely opens emails"
        case Feature.CLICK_RATE:
            if high:
                return (
                    "clicks most emails it opens"
                    if value >= 0.5
                    else "clicks emails more than most"
                )
            return "rarely clicks emails"
        case Feature.SESSION_DEPTH:
            return "views many pages a day" if high else "views few pages"
    return None


def describe(z: Mapping[str, float], centroid: Mapping[str, float]) -> str:
    """Returns a plain-language description of a centroid: its most distinctive features.

    Features at least `NOTABLE_Z` standard deviations from the mean count, the
    furthest first (ties in feature order), at most `MAX_PHRASES` of them.
    """
    order = {name: n for n, name in enumerate(z)}
    notable = sorted(
        (name for name, value in z.items() if abs(value) >= NOTABLE_Z),
        key=lambda name: (-abs(z[name]), order[name]),
    )
    phrases: list[str] = []
    for name in notable:
        phrase = _phrase(name, z[name], centroid[name])
        if phrase is not None and phrase not in phrases:
            phrases.append(phrase)
    return ", ".join(phrases[:MAX_PHRASES]) or "close to the average customer"


def clean_category(value: object) -> str | None:
    """Returns a category name as features use it, or None for no usable name."""
    if not isinstance(value, str):
        return None
    name = " ".join(value.split())[:MAX_CATEGORY_CHARS]
    return name or None
