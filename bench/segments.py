"""Segments: full recompute against a hand-written aggregation, and the cost of real time.

Workload: the demo generator's history (`app.demo.generate`, seed 1, 90 days ending when
the run starts) for `--people` people (default 1,000: 1,000 profiles, 35,850 events; the
issue asks for 20,000 people, 690,160 events, which the profile builder alone would
take about 30 minutes to apply here, see docs/benchmarks.md). Each demo call
becomes the event document ingest stores (`app.ingest.models.validate_event`, source
`demo`, received 1 ms apart in history order), is appended with ingest's
`EventStore.append` (batches of 1,000), and the profile builder (`app.worker.build`,
default settings but fuzzy matching and real-time segments off while loading) applies
them all. The database is an embedded SecantusDB in a temporary data directory
(sync-on-commit, as `kindred serve` runs it).

Six template segments (`profiles.segments.templates`): Cart Abandoners, Active Buyers,
Dormant, New Visitors, High Engagement, Low Engagement, stored as
`SegmentService.create` stores them.

Full recompute: per segment, `SegmentService.recompute` once with no stored members (it
writes every entry), then `--rounds` rounds in which a steady-state recompute (nothing
to write) and the hand-written aggregations take turns going first. All evaluate at
one `now`. Each hand-written result must equal the stored memberships, or the run
fails. Ratio: raw seconds / Kindred seconds (medians over the rounds), target >= 0.7.
The time Kindred's recompute spends in its compiled aggregation (`SegmentStore.evaluate`,
wrapped) is shown beside it.

"Raw" is what a MongoDB developer would write for each rule: event conditions grouped
over `events` (one pass, then a `$lookup` keeping live profiles), Dormant as a plain
`$match` that can use the `stats.last_seen` index, Low Engagement as a `$match` plus one
`$lookup` with `$limit: 1`. For the four event segments a second hand-written form,
shown for information, evaluates as Kindred does, a `$lookup` into `events` per
profile, with a `$match` between lookups and `$limit: 1` where one event decides.

Real time: `2 * --stream` new events for existing people (`build_stream`: web sessions
of page views, product views, cart adds and orders, and email opens and clicks),
stamped over the last hour or so, in time order, cut into `2 * --chunks` chunks. The
chunks go alternately (off, on, on, off, ...) to a builder without real-time segments
and to one with them (`app.worker.build`, `segments_realtime` false / true, other
settings default), each chunk appended as pending and drained with `run_batch`.
Reported: events/s of each, and the time spent in `SegmentService.on_batch` (timed by
wrapping it and the store methods it calls, on that one instance) per applied event
and as a share of the builder's time for those batches.

Exits 0 on MISS (it is a measurement); 1 when the harness fails or the members differ.
"""

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from common import BenchError, phase, print_table, ratio_row
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app import worker
from app.builder import ProfileBuilder
from app.demo import (
    CAMPAIGNS,
    CATALOGUE,
    CATEGORIES,
    CURRENCY,
    DEMO_SOURCE,
    SHOP,
    Call,
    CallType,
    Demo,
    Person,
    generate,
)
from app.embedded import EmbeddedServer
from app.ingest.models import Limits, Rejection, validate_event
from app.ingest.store import EventStore
from app.mongo import Document, create_client, ensure_indexes, index_registry
from app.settings import Settings
from app.state import profile_service
from profiles.segments import rules
from profiles.segments.models import Change, Transition
from profiles.segments.service import SegmentService, Touch
from profiles.segments.store import SegmentRecord, SegmentStore
from profiles.segments.templates import CART_ADD, CLICKED, OPENED, ORDER, TEMPLATES
from profiles.service import utcnow

T = TypeVar("T")
Pipeline = list[dict[str, Any]]

DATABASE = "kindred_bench"
STREAM_SOURCE = "bench-stream"
ISSUE_PEOPLE = 20_000
DEFAULT_PEOPLE = 1_000
DAYS = 90
SEED = 1
LOAD_BATCH = 1_000
ROUNDS = 3
STREAM_EVENTS = 4_000  # per mode
CHUNKS = 4  # per mode
STREAM_RATE = 2.0  # events per second of stream time
EMAIL_SHARE = 0.25  # of the stream's visits: an email opened instead of a web session
TARGET = 0.7
PROGRESS_EVERY = 15.0
SEGMENTS = (
    "seg_cart_abandoners",
    "seg_active_buyers",
    "seg_dormant",
    "seg_new_visitors",
    "seg_high_engagement",
    "seg_low_engagement",
)
# How each raw aggregation reads, for the workload printout.
RAW_FORMS = {
    "seg_cart_abandoners": "events: $match adds+orders, $group max(add), max(order) per profile",
    "seg_active_buyers": "events: $match orders in 30 days, $group by profile",
    "seg_dormant": "profiles: $match stats.last_seen < now-60d (indexed)",
    "seg_new_visitors": "events: $match pages in 7 days or orders, $group counts per profile",
    "seg_high_engagement": "events: $match opens+clicks in 30 days, $group counts per profile",
    "seg_low_engagement": "profiles: $match email set, $lookup opens/clicks in 60 days, limit 1",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--people",
        type=int,
        default=DEFAULT_PEOPLE,
        help=f"demo people (default {DEFAULT_PEOPLE:,}; the issue's workload is {ISSUE_PEOPLE:,})",
    )
    parser.add_argument("--days", type=int, default=DAYS, help=f"days of history ({DAYS})")
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"steady-state recompute rounds ({ROUNDS})"
    )
    parser.add_argument(
        "--stream",
        type=int,
        default=STREAM_EVENTS,
        help=f"real-time events per mode ({STREAM_EVENTS:,}; 0 skips the real-time part)",
    )
    parser.add_argument(
        "--chunks", type=int, default=CHUNKS, help=f"stream chunks per mode ({CHUNKS})"
    )
    args = parser.parse_args()
    if args.people < 10 or args.days < 1 or args.rounds < 1 or args.stream < 0:
        parser.error("--people must be at least 10, --days and --rounds at least 1, --stream >= 0")
    if args.chunks < 1 or (args.stream and args.stream < args.chunks):
        parser.error("--chunks must be at least 1 and at most --stream")
    return args


def print_workload(
    args: argparse.Namespace, demo: Demo, stream: list[tuple[float, dict[str, Any]]]
) -> None:
    settings = Settings()
    kinds = Counter(_kind(body) for _, body in stream)
    mix = ", ".join(f"{name} {n / len(stream):.0%}" for name, n in kinds.most_common())
    print("Segments (bench/segments.py)")
    print(
        f"  history:  app.demo.generate(seed={SEED}, people={args.people:,}, days={args.days}), "
        f"{len(demo.calls):,} events;\n"
        f"            the issue's workload is {ISSUE_PEOPLE:,} people (690,160 events), "
        "too slow to load here"
    )
    print(
        "  load:     ingest's validate_event -> EventStore.append (batches of "
        f"{LOAD_BATCH:,}) as pending,\n"
        "            then the profile builder (app.worker.build; fuzzy matching and "
        "real-time segments off)\n"
        "  server:   embedded SecantusDB in a temp data dir (sync-on-commit, as kindred "
        "serve)"
    )
    print("  segments: " + ", ".join(t.name for t in _templates()))
    print(
        f"  recompute: first run (writes every entry), then {args.rounds} rounds in which a "
        "steady-state\n"
        "            recompute and the hand-written aggregations take turns; ratio = raw s / "
        f"Kindred s\n            (medians), target >= {TARGET}; 'per profile' (info): "
        "the event segments written\n"
        "            by hand as Kindred evaluates them, a $lookup into events per profile"
    )
    for segment_id in SEGMENTS:
        print(f"            raw {segment_id}: {RAW_FORMS[segment_id]}")
    if stream:
        per_mode = len(stream) // 2
        print(
            f"  real time: {per_mode:,} new events per mode for existing people, "
            f"{args.chunks} chunks per mode,\n"
            "            alternating (off, on, on, off, ...), drained by builders with "
            "segments_realtime\n"
            f"            false / true (batch {settings.worker_batch_size}, other settings "
            "default);\n"
            f"            mix: {mix}"
        )
    print(flush=True)


def _templates() -> list[Any]:
    by_id = {t.id: t for t in TEMPLATES}
    return [by_id[segment_id] for segment_id in SEGMENTS]


def _kind(event: dict[str, Any]) -> str:
    return str(event.get("event") or event["type"])


# --- the history -----------------------------------------------------------------------------


def payload(call: Call) -> dict[str, Any]:
    """Returns the Segment event the SDK sends for a demo call (without `sentAt`)."""
    body: dict[str, Any] = {
        "type": call.type.value,
        "messageId": call.message_id,
        "timestamp": call.timestamp.isoformat(),
        "context": dict(call.context),
    }
    if call.user_id is not None:
        body["userId"] = call.user_id
    if call.anonymous_id is not None:
        body["anonymousId"] = call.anonymous_id
    if call.type is CallType.IDENTIFY:
        body["traits"] = dict(call.data)
    elif call.type is CallType.TRACK:
        body["event"] = call.name
        body["properties"] = dict(call.data)
    else:
        body["name"] = call.name
        body["properties"] = dict(call.data)
    return body


def stored_events(bodies: Sequence[dict[str, Any]], *, source: str) -> list[Document]:
    """Returns the event documents ingest stores for the bodies (received_at set later)."""
    limits = Limits()
    placeholder = utcnow()
    docs: list[Document] = []
    for body in bodies:
        doc = validate_event(body, source=source, received_at=placeholder, limits=limits)
        if isinstance(doc, Rejection):
            raise BenchError(f"ingest refused event {doc.message_id}: {doc.reason}")
        docs.append(doc)
    return docs


def receive(docs: Sequence[Document]) -> None:
    """Stamps `received_at` 1 ms apart, in order, ending now (the builder leases by it)."""
    end = utcnow()
    for index, doc in enumerate(docs):
        doc["received_at"] = end - timedelta(milliseconds=len(docs) - index)


async def append(db: AsyncDatabase[Document], docs: Sequence[Document]) -> None:
    store = EventStore(db)
    for start in range(0, len(docs), LOAD_BATCH):
        appended = await store.append(docs[start : start + LOAD_BATCH])
        if appended.duplicates:
            raise BenchError(f"{appended.duplicates} events were already stored")


@dataclass
class Drained:
    """Events a builder applied, in how many batches, and the seconds those batches took."""

    events: int = 0
    batches: int = 0
    seconds: float = 0.0


async def drain(builder: ProfileBuilder, *, progress: bool = False) -> Drained:
    """Runs batches until none applies; returns the events, batches and their time."""
    drained = Drained()
    last = started = time.perf_counter()
    while True:
        began = time.perf_counter()
        result = await builder.run_batch()
        if not result.applied:
            return drained
        drained.seconds += time.perf_counter() - began
        drained.events += result.applied
        drained.batches += 1
        if progress and time.perf_counter() - last >= PROGRESS_EVERY:
            last = time.perf_counter()
            rate = drained.events / (last - started)
            print(f"\n  {drained.events:,} applied ({rate:,.0f}/s)", end="", flush=True)


async def load(
    client: AsyncMongoClient[Document], db: AsyncDatabase[Document], demo: Demo
) -> tuple[int, int]:
    """Stores the demo's events and builds the profiles; returns (events, live profiles)."""
    await ensure_indexes(db, index_registry())
    with phase(f"storing {len(demo.calls):,} events as ingest does"):
        docs = stored_events([payload(c) for c in demo.calls], source=DEMO_SOURCE)
        receive(docs)
        await append(db, docs)
    settings = Settings(database=DATABASE, segments_realtime=False, match_online=False)
    builder = worker.build(client, settings, profile_service(db, settings))
    with phase("applying them with the profile builder"):
        drained = await drain(builder, progress=True)
        print(f"\n  {drained.events:,} events in {drained.batches} batches,", end=" ")
    if drained.events != len(docs):
        raise BenchError(f"the builder applied {drained.events:,} of {len(docs):,} events")
    profiles = await db["profiles"].count_documents({"merged_into": None})
    return len(docs), profiles


# --- full recompute --------------------------------------------------------------------------

LIVE: Pipeline = [
    {
        "$lookup": {
            "from": "profiles",
            "localField": "_id",
            "foreignField": "_id",
            "pipeline": [{"$match": {"merged_into": None}}, {"$project": {"_id": 1}}],
            "as": "live",
        }
    },
    {"$match": {"live": {"$ne": []}}},
    {"$project": {"_id": 1}},
]


def _applied(**match: Any) -> dict[str, Any]:
    return {"$match": {"status": "applied", **match}}


def _counts(**names: str) -> dict[str, Any]:
    return {
        field: {"$sum": {"$cond": [{"$eq": ["$event", name]}, 1, 0]}}
        for field, name in names.items()
    }


def raw_pipelines(now: datetime) -> dict[str, tuple[str, Pipeline]]:
    """Returns, per segment, the collection and a hand-written aggregation of its member ids."""
    days = {n: now - timedelta(days=n) for n in (7, 30, 60)}
    return {
        "seg_cart_abandoners": (
            "events",
            [
                _applied(type="track", event={"$in": [CART_ADD, ORDER]}),
                {
                    "$group": {
                        "_id": "$profile_id",
                        "added": {
                            "$max": {"$cond": [{"$eq": ["$event", CART_ADD]}, "$timestamp", None]}
                        },
                        "ordered": {
                            "$max": {"$cond": [{"$eq": ["$event", ORDER]}, "$timestamp", None]}
                        },
                    }
                },
                # No order after the last add: null (never ordered) sorts below every date.
                {
                    "$match": {
                        "added": {"$lte": now - timedelta(hours=48)},
                        "$expr": {"$lte": ["$ordered", "$added"]},
                    }
                },
                *LIVE,
            ],
        ),
        "seg_active_buyers": (
            "events",
            [
                _applied(type="track", event=ORDER, timestamp={"$gte": days[30]}),
                {"$group": {"_id": "$profile_id"}},
                *LIVE,
            ],
        ),
        "seg_dormant": (
            "profiles",
            [
                {"$match": {"merged_into": None, "stats.last_seen": {"$lt": days[60]}}},
                {"$project": {"_id": 1}},
            ],
        ),
        "seg_new_visitors": (
            "events",
            [
                _applied(
                    **{
                        "$or": [
                            {"type": "page", "timestamp": {"$gte": days[7]}},
                            {"type": "track", "event": ORDER},
                        ]
                    }
                ),
                {
                    "$group": {
                        "_id": "$profile_id",
                        "pages": {"$sum": {"$cond": [{"$eq": ["$type", "page"]}, 1, 0]}},
                        "orders": {"$sum": {"$cond": [{"$eq": ["$type", "track"]}, 1, 0]}},
                    }
                },
                {"$match": {"pages": {"$gte": 1}, "orders": 0}},
                *LIVE,
            ],
        ),
        "seg_high_engagement": (
            "events",
            [
                _applied(
                    type="track", event={"$in": [OPENED, CLICKED]}, timestamp={"$gte": days[30]}
                ),
                {"$group": {"_id": "$profile_id", **_counts(opened=OPENED, clicked=CLICKED)}},
                {"$match": {"$or": [{"opened": {"$gte": 3}}, {"clicked": {"$gte": 1}}]}},
                *LIVE,
            ],
        ),
        "seg_low_engagement": (
            "profiles",
            [
                {"$match": {"merged_into": None, "traits.email.value": {"$ne": None}}},
                {
                    "$lookup": {
                        "from": "events",
                        "localField": "_id",
                        "foreignField": "profile_id",
                        "pipeline": [
                            _applied(
                                type="track",
                                event={"$in": [OPENED, CLICKED]},
                                timestamp={"$gte": days[60]},
                            ),
                            {"$limit": 1},
                            {"$project": {"_id": 1}},
                        ],
                        "as": "engaged",
                    }
                },
                {"$match": {"engaged": {"$size": 0}}},
                {"$project": {"_id": 1}},
            ],
        ),
    }


def _events_of_profile(
    as_: str, tail: Pipeline, let: dict[str, Any] | None = None, **match: Any
) -> dict[str, Any]:
    lookup: dict[str, Any] = {
        "from": "events",
        "localField": "_id",
        "foreignField": "profile_id",
        "pipeline": [_applied(**match), *tail],
        "as": as_,
    }
    if let is not None:
        lookup["let"] = let
    return {"$lookup": lookup}


def raw_per_profile(now: datetime) -> dict[str, Pipeline]:
    """Returns the event segments written as Kindred evaluates them: a `$lookup` per profile.

    Hand-written, so each `$lookup` reads no more than it must (`$limit: 1` where one
    event decides) and a `$match` drops profiles before the next `$lookup`.
    """
    days = {n: now - timedelta(days=n) for n in (7, 30)}
    live: dict[str, Any] = {"$match": {"merged_into": None}}
    one: Pipeline = [{"$limit": 1}, {"$project": {"_id": 1}}]
    return {
        "seg_cart_abandoners": [
            live,
            _events_of_profile(
                "added",
                [{"$group": {"_id": None, "t": {"$max": "$timestamp"}}}],
                type="track",
                event=CART_ADD,
            ),
            {"$unwind": "$added"},
            {"$match": {"added.t": {"$lte": now - timedelta(hours=48)}}},
            _events_of_profile(
                "later",
                one,
                let={"t": "$added.t"},
                type="track",
                event=ORDER,
                **{"$expr": {"$gt": ["$timestamp", "$$t"]}},
            ),
            {"$match": {"later": {"$size": 0}}},
            {"$project": {"_id": 1}},
        ],
        "seg_active_buyers": [
            live,
            _events_of_profile(
                "orders", one, type="track", event=ORDER, timestamp={"$gte": days[30]}
            ),
            {"$match": {"orders": {"$ne": []}}},
            {"$project": {"_id": 1}},
        ],
        "seg_new_visitors": [
            live,
            _events_of_profile("orders", one, type="track", event=ORDER),
            {"$match": {"orders": {"$size": 0}}},
            _events_of_profile("pages", one, type="page", timestamp={"$gte": days[7]}),
            {"$match": {"pages": {"$ne": []}}},
            {"$project": {"_id": 1}},
        ],
        "seg_high_engagement": [
            live,
            _events_of_profile(
                "engaged",
                [{"$group": {"_id": "$event", "n": {"$sum": 1}}}],
                type="track",
                event={"$in": [OPENED, CLICKED]},
                timestamp={"$gte": days[30]},
            ),
            # SecantusDB knows no `$or` inside `$elemMatch`.
            {
                "$match": {
                    "$or": [
                        {"engaged._id": CLICKED},
                        {"engaged": {"$elemMatch": {"_id": OPENED, "n": {"$gte": 3}}}},
                    ]
                }
            },
            {"$project": {"_id": 1}},
        ],
    }


async def raw_members(db: AsyncDatabase[Document], collection: str, pipeline: Pipeline) -> set[str]:
    return {str(doc["_id"]) async for doc in await db[collection].aggregate(pipeline)}


async def timed(work: Awaitable[T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await work
    return result, time.perf_counter() - started


@dataclass
class SegmentTiming:
    name: str
    members: int = 0
    first: float = 0.0
    kindred: list[float] = field(default_factory=list)
    aggregation: list[float] = field(default_factory=list)  # Kindred's store.evaluate
    raw: list[float] = field(default_factory=list)
    per_profile: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.raw) / statistics.median(self.kindred)


async def install(service: SegmentService) -> None:
    """Stores the six template segments as `SegmentService.create` does, without evaluating."""
    now = utcnow()
    for template in _templates():
        definition = rules.parse_definition(template.definition()).to_document()
        record = SegmentRecord(
            id=template.id,
            name=template.name,
            description=template.description,
            definition=definition,
            version=1,
            created_at=now,
            updated_at=now,
            template=template.id,
        )
        await service.store.insert(record, actor="bench")


async def run_recompute(
    db: AsyncDatabase[Document], service: SegmentService, rounds: int
) -> dict[str, SegmentTiming]:
    now = utcnow()
    raw = raw_pipelines(now)
    timings = {t.id: SegmentTiming(t.name) for t in _templates()}
    expected: dict[str, set[str]] = {}
    with phase("first recompute of each segment (writes every entry)"):
        for segment_id, timing in timings.items():
            summary, timing.first = await timed(service.recompute(segment_id, now=now))
            expected[segment_id] = {pid async for pid in service.store.members(segment_id)}
            timing.members = summary.size
            if summary.entered != summary.size or len(expected[segment_id]) != summary.size:
                raise BenchError(
                    f"{segment_id}: {summary.size} members, {summary.entered} entered, "
                    f"{len(expected[segment_id])} stored"
                )
    per_profile = raw_per_profile(now)
    evaluate = Clock()
    store: Any = service.store
    store.evaluate = clocked_iter(evaluate, store.evaluate)
    for number in range(rounds):
        with phase(f"round {number + 1}/{rounds}: steady-state recompute and raw aggregations"):
            for segment_id, timing in timings.items():
                sides = ["kindred", "raw", "per_profile"]
                if segment_id not in per_profile:
                    sides.remove("per_profile")
                shift = number % len(sides)  # each goes first in turn
                for side in sides[shift:] + sides[:shift]:
                    if side == "kindred":
                        before = evaluate.seconds
                        summary, seconds = await timed(service.recompute(segment_id, now=now))
                        if summary.entered or summary.exited:
                            raise BenchError(f"{segment_id}: a steady-state recompute changed it")
                        timing.kindred.append(seconds)
                        timing.aggregation.append(evaluate.seconds - before)
                    elif side == "raw":
                        collection, pipeline = raw[segment_id]
                        found, seconds = await timed(raw_members(db, collection, pipeline))
                        check_same(segment_id, expected[segment_id], found)
                        timing.raw.append(seconds)
                    else:
                        work = raw_members(db, "profiles", per_profile[segment_id])
                        found, seconds = await timed(work)
                        check_same(segment_id, expected[segment_id], found)
                        timing.per_profile.append(seconds)
    return timings


def check_same(segment_id: str, kindred: set[str], raw: set[str]) -> None:
    if kindred != raw:
        only_k, only_r = sorted(kindred - raw)[:3], sorted(raw - kindred)[:3]
        raise BenchError(
            f"{segment_id}: Kindred has {len(kindred)} members, the raw aggregation "
            f"{len(raw)}; only in Kindred {only_k}, only in raw {only_r}"
        )


# --- real time -------------------------------------------------------------------------------


def _product_url(sku: str) -> str:
    return f"{SHOP}/products/{sku.lower()}"


def _visit(person: Person, rng: random.Random) -> list[dict[str, Any]]:
    """Returns one web session of a known person on their first device."""
    calls: list[dict[str, Any]] = []

    def add(kind: str, name: str, properties: dict[str, Any]) -> None:
        body: dict[str, Any] = {
            "type": kind,
            "anonymousId": person.anonymous_ids[0],
            "properties": properties,
            "context": {"locale": "en-GB"},
            ("event" if kind == "track" else "name"): name,
        }
        if person.user_id is not None:
            body["userId"] = person.user_id
        calls.append(body)

    if rng.random() < 0.5:
        add("page", "Home", {"path": "/", "url": SHOP + "/"})
    category = rng.choice(CATEGORIES)
    path = f"/collections/{category.lower()}"
    add("page", category, {"path": path, "url": SHOP + path, "category": category})
    products = rng.sample(CATALOGUE, rng.randint(1, 3))
    for product in products:
        add("track", "Product Viewed", product.properties() | {"url": _product_url(product.sku)})
    if rng.random() < 0.3:
        lines = [p.properties(rng.choice((1, 1, 1, 2))) for p in products[: rng.randint(1, 2)]]
        for line in lines:
            add("track", CART_ADD, line)
        if person.user_id is not None and rng.random() < 0.4:
            revenue = round(sum(line["price"] * line["quantity"] for line in lines), 2)
            add("page", "Cart", {"path": "/cart", "url": SHOP + "/cart"})
            add("track", "Checkout Started", {"value": revenue, "currency": CURRENCY})
            order = {
                "order_id": f"ORD-bench-{rng.getrandbits(40):010x}",
                "revenue": revenue,
                "currency": CURRENCY,
                "products": lines,
            }
            add("track", ORDER, order)
            add("page", "Order Confirmation", {"path": "/checkout/thanks"})
    return calls


def _email(person: Person, rng: random.Random) -> list[dict[str, Any]]:
    """Returns an email opened by a signed-up person, and now and then the click that follows."""
    number = rng.randrange(len(CAMPAIGNS))
    name, path = CAMPAIGNS[number]
    data = {"campaign_id": f"cmp_{number + 1:03d}", "campaign_name": name, "email_subject": name}
    context = {"integration": {"name": "kindred-demo-esp"}}
    calls = [{"type": "track", "event": OPENED, "properties": data, "context": context}]
    if rng.random() < 0.3:
        clicked = data | {"link_url": SHOP + path}
        calls.append({"type": "track", "event": CLICKED, "properties": clicked, "context": context})
    for call in calls:
        call["userId"] = person.user_id
    return calls


def build_stream(people: Sequence[Person], total: int) -> list[tuple[float, dict[str, Any]]]:
    """Returns `total` new Segment events for existing people, in time order, with offsets.

    The offsets are seconds from the stream's start; `stamp` turns them into timestamps
    ending when the events are sent. Visits start at random over `total / STREAM_RATE`
    seconds; a quarter of them are an email opened (by a signed-up person), the rest a
    web session on the person's first device (any person; signed-up ones also send their
    userId, and only they order). Events of a visit are 5 to 60 s apart, so each batch
    mixes many visits, as live traffic does.
    """
    rng = random.Random(SEED)
    span = total / STREAM_RATE
    signed_up = [p for p in people if p.user_id is not None]
    timed_calls: list[tuple[float, int, dict[str, Any]]] = []
    while len(timed_calls) < total:
        if rng.random() < EMAIL_SHARE:
            calls = _email(rng.choice(signed_up), rng)
        else:
            calls = _visit(rng.choice(people), rng)
        at = rng.uniform(0, span)
        for call in calls:
            timed_calls.append((at, len(timed_calls), call))
            at += rng.uniform(5, 60)
    timed_calls.sort(key=lambda item: (item[0], item[1]))
    return [
        (at, {**call, "messageId": f"bench-{number:07d}"})
        for number, (at, _, call) in enumerate(timed_calls[:total])
    ]


def stamp(stream: Sequence[tuple[float, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Returns the stream's events with timestamps, the last one a second before now."""
    first = utcnow() - timedelta(seconds=stream[-1][0] + 1)
    return [
        {**body, "timestamp": (first + timedelta(seconds=at)).isoformat()} for at, body in stream
    ]


@dataclass
class Clock:
    """Seconds and calls of a wrapped coroutine function."""

    seconds: float = 0.0
    calls: int = 0


def clocked(clock: Clock, method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            clock.seconds += time.perf_counter() - started
            clock.calls += 1

    return wrapper


def clocked_iter(
    clock: Clock, method: Callable[..., AsyncIterator[T]]
) -> Callable[..., AsyncIterator[T]]:
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[T]:
        started = time.perf_counter()
        try:
            async for item in method(*args, **kwargs):
                yield item
        finally:
            clock.seconds += time.perf_counter() - started
            clock.calls += 1

    return wrapper


@dataclass
class Probe:
    """What the wrapped segment service saw: time per part, changes, profiles per batch."""

    on_batch: Clock = field(default_factory=Clock)
    parts: dict[str, Clock] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    touched: list[int] = field(default_factory=list)


@dataclass
class RealTime:
    off: Drained
    on: Drained
    probe: Probe


def instrument(service: SegmentService) -> Probe:
    """Wraps `on_batch` and the store reads and writes it makes, on this instance only."""
    probe = Probe(
        parts={name: Clock() for name in ("live", "facts", "events_of", "apply", "add_to_size")}
    )
    store: Any = service.store
    for name, clock in probe.parts.items():
        setattr(store, name, clocked(clock, getattr(store, name)))
    method = clocked(probe.on_batch, service.on_batch)

    async def recording(touched: Mapping[str, Touch], **kwargs: Any) -> list[Transition]:
        probe.touched.append(len(touched))
        found = await method(touched, **kwargs)
        probe.transitions.extend(found)
        return found

    service.on_batch = recording  # type: ignore[method-assign]
    return probe


async def run_realtime(
    client: AsyncMongoClient[Document],
    db: AsyncDatabase[Document],
    stream: list[tuple[float, dict[str, Any]]],
    chunks: int,
) -> RealTime:
    settings = {flag: Settings(database=DATABASE, segments_realtime=flag) for flag in (False, True)}
    builders = {
        flag: worker.build(client, s, profile_service(db, s)) for flag, s in settings.items()
    }
    segments = builders[True].segments
    if segments is None:
        raise BenchError("the builder with segments_realtime=true has no segment service")
    probe = instrument(segments)
    docs = stored_events(stamp(stream), source=STREAM_SOURCE)
    size = len(docs) // (2 * chunks)
    drained = {False: Drained(), True: Drained()}
    for number in range(2 * chunks):
        realtime = number % 4 in (1, 2)  # off, on, on, off, off, on, ...
        chunk = docs[number * size : (number + 1) * size]
        receive(chunk)
        await append(db, chunk)
        label = "on " if realtime else "off"
        with phase(f"chunk {number + 1}/{2 * chunks} ({label}, {len(chunk):,} events)"):
            result = await drain(builders[realtime])
        if result.events != len(chunk):
            raise BenchError(f"chunk {number + 1}: {result.events} of {len(chunk)} applied")
        total = drained[realtime]
        total.events += result.events
        total.batches += result.batches
        total.seconds += result.seconds
    return RealTime(drained[False], drained[True], probe)


# --- the report ------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _median(samples: list[float]) -> str:
    return _seconds(statistics.median(samples)) if samples else "-"


def report_recompute(timings: dict[str, SegmentTiming]) -> list[list[str]]:
    rows, ratios = [], []
    for timing in timings.values():
        kindred = statistics.median(timing.kindred)
        per_profile = (
            f"{statistics.median(timing.per_profile) / kindred:.2f}" if timing.per_profile else "-"
        )
        rows.append(
            [
                timing.name,
                f"{timing.members:,}",
                _seconds(timing.first),
                _median(timing.kindred),
                _median(timing.aggregation),
                _median(timing.raw),
                f"{timing.ratio:.2f}",
                _median(timing.per_profile),
                per_profile,
            ]
        )
        ratios.append(
            ratio_row(
                f"{timing.name}: raw s / Kindred s", timing.ratio, TARGET, higher_is_better=True
            )
        )
    totals = {
        name: sum(statistics.median(getattr(t, name)) for t in timings.values())
        for name in ("kindred", "aggregation", "raw")
    }
    first = sum(t.first for t in timings.values())
    rows.append(
        [
            "all six",
            "",
            f"{first:.2f}",
            f"{totals['kindred']:.2f}",
            f"{totals['aggregation']:.2f}",
            f"{totals['raw']:.2f}",
            f"{totals['raw'] / totals['kindred']:.2f}",
            "",
            "",
        ]
    )
    print(
        "\nFull recompute (seconds, medians of the steady-state rounds; 'aggregation' is the "
        "part of Kindred's\nrecompute spent in its compiled aggregation, 'per profile' the "
        "hand-written $lookup-per-profile form)"
    )
    print_table(
        [
            "segment",
            "members",
            "first (writes)",
            "Kindred",
            "aggregation",
            "raw",
            "raw/Kindred",
            "per profile",
            "per profile/Kindred",
        ],
        rows,
    )
    ratios.append(
        ratio_row(
            "all six: raw s / Kindred s",
            totals["raw"] / totals["kindred"],
            None,
            higher_is_better=True,
        )
    )
    return ratios


def report_realtime(result: RealTime) -> list[list[str]]:
    off, on = result.off, result.on
    print("\nReal time (builder batches only; appending the chunks is not timed)")
    print_table(
        ["builder", "events", "batches", "seconds", "events/s", "ms per event"],
        [
            [
                name,
                f"{d.events:,}",
                f"{d.batches}",
                f"{d.seconds:.1f}",
                f"{d.events / d.seconds:,.0f}",
                f"{d.seconds / d.events * 1000:.2f}",
            ]
            for name, d in (("segments off", off), ("segments on", on))
        ],
    )
    probe = result.probe
    spent = probe.on_batch.seconds
    store = sum(c.seconds for c in probe.parts.values())
    rows = [
        [
            f"store.{name}",
            f"{clock.calls}",
            f"{clock.seconds:.2f}",
            f"{clock.seconds / on.events * 1000:.2f}",
            f"{clock.seconds / on.seconds:.0%}",
        ]
        for name, clock in probe.parts.items()
    ]
    rows.append(
        [
            "the rest (Python evaluation)",
            "",
            f"{spent - store:.2f}",
            f"{(spent - store) / on.events * 1000:.2f}",
            f"{(spent - store) / on.seconds:.0%}",
        ]
    )
    rows.append(
        [
            "SegmentService.on_batch",
            f"{probe.on_batch.calls}",
            f"{spent:.2f}",
            f"{spent / on.events * 1000:.2f}",
            f"{spent / on.seconds:.0%}",
        ]
    )
    entered = sum(t.change is Change.ENTERED for t in probe.transitions)
    exited = len(probe.transitions) - entered
    touched = statistics.mean(probe.touched) if probe.touched else 0
    print(
        f"\nReal-time evaluation in the 'on' batches ({touched:.0f} profiles per batch on "
        f"average; {entered:,} entries, {exited:,} exits)"
    )
    print_table(["part", "calls", "seconds", "ms per event", "share of batch time"], rows)
    return [
        ratio_row(
            "on_batch time / batch time (segments on)",
            spent / on.seconds,
            None,
            higher_is_better=False,
        ),
        ratio_row(
            "events/s on / events/s off",
            (on.events / on.seconds) / (off.events / off.seconds),
            None,
            higher_is_better=True,
        ),
    ]


async def run(
    args: argparse.Namespace, uri: str, demo: Demo, stream: list[tuple[float, dict[str, Any]]]
) -> int:
    client = create_client(uri)
    db = client[DATABASE]
    try:
        events, profiles = await load(client, db, demo)
        print(f"{events:,} events applied, {profiles:,} live profiles", flush=True)
        service = SegmentService(client, SegmentStore(db))
        await install(service)
        timings = await run_recompute(db, service, args.rounds)
        realtime = await run_realtime(client, db, stream, args.chunks) if stream else None
    finally:
        await client.close()
    print(f"\nWorkload: {profiles:,} live profiles, {events:,} events of history")
    ratios = report_recompute(timings)
    if realtime is not None:
        ratios += report_realtime(realtime)
    print("\nRatios")
    print_table(["ratio", "value", "target", "result"], ratios)
    return 0


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    demo = generate(seed=SEED, people=args.people, days=args.days, now=utcnow())
    stream = build_stream(demo.people, 2 * args.stream) if args.stream else []
    print_workload(args, demo, stream)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="kindred-bench-") as tmp,
            EmbeddedServer(Path(tmp) / "data") as server,
        ):
            code = asyncio.run(run(args, server.uri, demo, stream))
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
