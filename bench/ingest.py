"""Ingestion: Segment-style `/v1/batch` into a live `kindred serve` until profiles show it.

Workload at `--scale 1`: 2,000 people and 50,000 events. The default is `--scale 0.1`
(200 people, 5,000 events): at full scale the run takes about 8 minutes on a 2-core
machine (the profile builder applies about 120 events/s there, see docs/benchmarks.md),
and the default run must stay under 5 minutes. `--scale F`
multiplies people and events; `--events N` sets the events and keeps 25 per person.

Every person sends as `userId` `u{i}`. Each person's first event is an `identify` with
`email` and `name` traits; the rest, shuffled with every other person's (fixed seed), are
`page` (40%) and `track` events: Product Viewed (25%), Product Added (12%), Order
Completed with `revenue` (8%) and Email Opened (15%). 200 of them (at most a tenth),
evenly spread through the stream, are markers: a `track` whose event name ("Bench Marker
000".."199") is unique to the sample.

The events go in stream order as `/v1/batch` requests of 100 events (bodies serialised
before timing), from 4 concurrent senders (aiohttp, one keep-alive connection each,
Basic auth with a write key made by `SourceStore.create`, closed loop), to `kindred serve`
(KINDRED_ENV=prod, its in-process profile builder on, default settings) on an embedded
SecantusDB in a temp data dir. Measured:

- acknowledged events/s: events / wall time of the sending phase; ack p50/p99 per request;
- applied events/s: events / (first send until every event is applied), polled every
  0.5 s as the sum of the profiles' `stats.event_count` (each applied event adds one);
- event-to-visible p50/p99 of the markers: from the start of the request that carried
  one until the person's profile, read through GraphQL
  `profile(identity: {kind: "user_id"}) { stats }`, counts that event name in
  `stats.event_counts`. Every 0.25 s one GraphQL read asks for the oldest marker not
  seen yet; when it shows, a second read (aliases) asks for the next 50. A marker counts
  as visible when the read that saw it returned, so the figures are late by up to one
  poll interval plus the read's own time.

Raw baseline, same server, same run, before the API starts: for each event one
`UpdateOne` upsert of a profile document keyed by person (`$inc` of the same stats
counters `profiles.stats` derives, `$min`/`$max` of first/last seen, `$set` of the traits
for identify), `bulk_write` batches of 100, 4 concurrent tasks, into a separate
database. Target: applied events/s / raw upserts/s >= 0.5. Exits 0 on MISS.
"""

import argparse
import asyncio
import base64
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from common import (
    ApiServer,
    BenchError,
    Timing,
    closed_loop,
    percentile,
    phase,
    print_table,
    ratio_row,
    with_async_db,
)
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.errors import BulkWriteError

from app.auth import KeyStore, Scope
from app.embedded import EmbeddedServer
from app.eventlog import APPLIED, EVENTS
from app.ingest.store import SourceStore
from app.settings import Settings
from profiles import stats as activity
from profiles.store import PROFILES

DATABASE = "kindred_bench"
RAW_DATABASE = "kindred_bench_raw"
RAW_PROFILES = "profiles"
SOURCE = "bench-ingest"
PEOPLE = 2_000
EVENTS_PER_PERSON = 25
SENDERS = 4
BATCH = 100
MARKERS = 200
MARKER_PREFIX = "Bench Marker "
APPLIED_POLL = 0.5
MARKER_POLL = 0.25
MARKER_ALIASES = 50
PROGRESS_EVERY = 10.0
STALL_TIMEOUT = 300.0  # give up when the pending count has not fallen for this long
DEFAULT_SCALE = 0.1
SEED = 20261124
DUPLICATE_KEY = 11000
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# (kind, track event name or page name, weight); identify is each person's first event.
MIX: list[tuple[str, str, int]] = [
    ("page", "", 40),
    ("track", "Product Viewed", 25),
    ("track", "Product Added", 12),
    ("track", activity.ORDER_COMPLETED, 8),
    ("track", activity.EMAIL_OPENED, 15),
]
PAGES = ["Home", "Pricing", "Catalog", "Product", "Cart", "Blog"]
FIRST_NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"]
LAST_NAMES = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        type=float,
        default=DEFAULT_SCALE,
        help=f"multiplies 2,000 people and 50,000 events (default {DEFAULT_SCALE:g})",
    )
    parser.add_argument(
        "--events", type=int, default=None, help="events to send (25 per person; overrides scale)"
    )
    parser.add_argument(
        "--markers", type=int, default=None, help=f"marker samples ({MARKERS}; 0: none)"
    )
    args = parser.parse_args()
    if args.scale <= 0 or (args.events is not None and args.events < 2):
        parser.error("--scale must be positive and --events at least 2")
    if args.events is None:
        args.people = max(1, round(PEOPLE * args.scale))
        args.events = max(2 * args.people, round(PEOPLE * EVENTS_PER_PERSON * args.scale))
    else:
        args.people = max(1, math.ceil(args.events / EVENTS_PER_PERSON))
    if args.markers is None:
        args.markers = MARKERS
    args.markers = min(args.markers, args.events // 10)
    return args


def print_workload(args: argparse.Namespace) -> None:
    settings = Settings()
    mix = ", ".join(f"{name or 'page'} {weight}%" for _, name, weight in MIX)
    print("Ingestion (bench/ingest.py)")
    print(
        f"  scale:    {args.people:,} people / {args.events:,} events; the full workload "
        "(--scale 1) is\n            2,000 / 50,000, over an hour with today's builder"
    )
    print(
        f"  data:     {args.people:,} people (userId u{{i}}), {args.events:,} events: one "
        "identify each first\n"
        "            (email, name), then, shuffled across people (seed "
        f"{SEED}),\n            {mix};\n"
        f"            {args.markers} of them are marker tracks with unique names, evenly "
        "spread\n"
        f"  sending:  /v1/batch of {BATCH} events, {SENDERS} concurrent senders (aiohttp, "
        "Basic auth write key),\n"
        "            closed loop, bodies serialised before timing\n"
        "  server:   embedded SecantusDB in a temp data dir (sync-on-commit, as kindred "
        "serve)\n"
        "  API:      `kindred serve` in its own process, KINDRED_ENV=prod, in-process "
        f"profile builder\n            (batch {settings.worker_batch_size}, poll "
        f"{settings.worker_poll_seconds:g} s)\n"
        "  applied:  first send until every event is applied (sum of stats.event_count "
        f"every {APPLIED_POLL:g} s)\n"
        "  visible:  marker sent until GraphQL profile { stats } counts it: every "
        f"{MARKER_POLL:g} s the oldest\n            unseen marker, then (once it shows) "
        f"the next {MARKER_ALIASES} in one aliased query\n"
        f"  raw:      per-event UpdateOne upsert ($inc/$min/$max stats, $set traits), "
        f"bulk_write of {BATCH},\n            {SENDERS} tasks, separate database, same "
        "server, before the API starts"
    )
    print(flush=True)


# --- the workload ---------------------------------------------------------------------------


@dataclass
class Marker:
    name: str
    user_id: str
    sent_at: float | None = None
    visible_at: float | None = None


@dataclass
class Workload:
    events: list[dict[str, Any]]
    people: int
    markers: dict[int, Marker] = field(default_factory=dict)  # by event index

    def bodies(self) -> list[bytes]:
        """Returns the `/v1/batch` request bodies, in stream order."""
        return [
            json.dumps({"batch": self.events[i : i + BATCH]}).encode()
            for i in range(0, len(self.events), BATCH)
        ]


def _stamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _activity(rng: random.Random, kind: str, name: str, person: int) -> dict[str, Any]:
    if kind == "page":
        page = rng.choice(PAGES)
        return {"type": "page", "name": page, "properties": {"path": f"/{page.lower()}"}}
    sku = f"sku-{rng.randrange(500):03d}"
    properties: dict[str, Any]
    if name == activity.ORDER_COMPLETED:
        revenue = round(rng.uniform(5, 400), 2)
        properties = {"order_id": f"o-{person}-{rng.randrange(10**6)}", "revenue": revenue}
        properties["currency"] = "EUR"
    elif name == activity.EMAIL_OPENED:
        properties = {"campaign": f"c{rng.randrange(20):02d}"}
    else:
        properties = {"product_id": sku, "price": round(rng.uniform(5, 200), 2)}
    return {"type": "track", "event": name, "properties": properties}


def build_workload(people: int, total: int, markers: int) -> Workload:
    """Returns the events in sending order, with the positions of the markers."""
    rng = random.Random(SEED)
    per_person = [total // people + (1 if p < total % people else 0) for p in range(people)]
    order = [p for p in range(people) for _ in range(per_person[p])]
    rng.shuffle(order)
    kinds, weights = [(k, n) for k, n, _ in MIX], [w for _, _, w in MIX]
    seen: set[int] = set()
    events: list[dict[str, Any]] = []
    for index, person in enumerate(order):
        body: dict[str, Any]
        if person not in seen:
            seen.add(person)
            first, last = FIRST_NAMES[person % 8], LAST_NAMES[(person // 8) % 8]
            traits = {"email": f"user{person}@example.com", "name": f"{first} {last}"}
            body = {"type": "identify", "traits": traits}
        else:
            ((kind, name),) = rng.choices(kinds, weights)
            body = _activity(rng, kind, name, person)
        body["userId"] = f"u{person}"
        body["messageId"] = f"bench-{index:07d}"
        body["timestamp"] = _stamp(T0 + timedelta(seconds=index))
        events.append(body)
    workload = Workload(events, people)
    for sample in range(markers):
        index = int((sample + 0.5) * total / markers)
        while events[index]["type"] == "identify":  # keep each person's identify first
            index = (index + 1) % total
        name = f"{MARKER_PREFIX}{sample:03d}"
        events[index].update(type="track", event=name, properties={"sample": sample})
        events[index].pop("name", None)
        workload.markers[index] = Marker(name, events[index]["userId"])
    return workload


# --- the raw baseline -----------------------------------------------------------------------


def raw_update(event: dict[str, Any]) -> UpdateOne:
    """Returns the per-event upsert that applies an event's stats and traits to its person."""
    at = datetime.fromisoformat(event["timestamp"])
    name = event.get("event") if event["type"] == "track" else event.get("name")
    change = activity.ActivityEvent(event["type"], name, at, event.get("properties") or {})
    update = activity.delta_for([change]).update_document()
    if event["type"] == "identify":
        update["$set"] = {
            f"traits.{key}": {"value": value, "observed_at": at, "source": SOURCE}
            for key, value in event["traits"].items()
        }
    return UpdateOne({"_id": event["userId"]}, update, upsert=True)


async def run_raw(uri: str, workload: Workload) -> Timing:
    updates = [raw_update(e) for e in workload.events]
    batches = [updates[i : i + BATCH] for i in range(0, len(updates), BATCH)]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        profiles = client[RAW_DATABASE][RAW_PROFILES]
        retried = 0

        async def write(requests: list[UpdateOne]) -> None:
            nonlocal retried
            # Two tasks upserting a new person at once: one may lose on the unique _id;
            # its update is simply sent again (MongoDB retries such upserts itself).
            for _attempt in range(5):
                try:
                    await profiles.bulk_write(requests, ordered=False)
                    return
                except BulkWriteError as exc:
                    errors = exc.details.get("writeErrors", [])
                    if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                        raise
                    requests = [requests[e["index"]] for e in errors]
                    retried += len(requests)
            raise BenchError("raw: upserts kept colliding on _id")

        timing = await closed_loop([write] * SENDERS, batches, "raw bulk_write")
        await check_raw(profiles, workload)
        if retried:
            print(f"(raw: {retried} colliding upserts sent again)", end=" ")
        return timing
    finally:
        await client.close()


async def check_raw(profiles: Any, workload: Workload) -> None:
    pipeline = [
        {"$group": {"_id": None, "n": {"$sum": 1}, "events": {"$sum": "$stats.event_count"}}}
    ]
    found = [doc async for doc in await profiles.aggregate(pipeline)]
    got = (found[0]["n"], found[0]["events"]) if found else (0, 0)
    if got != (workload.people, len(workload.events)):
        raise BenchError(
            f"raw: {got} (profiles, events counted), expected "
            f"{(workload.people, len(workload.events))}"
        )


# --- Kindred --------------------------------------------------------------------------------


async def create_keys(db: Any) -> tuple[str, str]:
    """Returns a write key for the source and an API key that may read profiles."""
    _, write_key = await SourceStore(db).create(SOURCE)
    _, api_key = await KeyStore(db).create(name="bench-ingest", scopes=[Scope.PROFILES_READ])
    return write_key, api_key


@dataclass
class IngestResult:
    acks: Timing
    applied_after: float  # seconds from the first send until nothing was pending
    pending_when_sent: int
    markers: list[Marker]
    marker_polls: list[float]  # durations of the GraphQL marker polls


def basic_auth(write_key: str) -> str:
    """Returns the Authorization header the Segment SDKs send: the key as Basic username."""
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def sender(
    session: aiohttp.ClientSession, bodies: list[bytes], workload: Workload
) -> Callable[[int], Awaitable[None]]:
    async def send(number: int) -> None:
        started = time.perf_counter()
        for index in range(number * BATCH, min((number + 1) * BATCH, len(workload.events))):
            if index in workload.markers:
                workload.markers[index].sent_at = started
        expected = min(BATCH, len(workload.events) - number * BATCH)
        async with session.post(
            "/v1/batch", data=bodies[number], headers={"Content-Type": "application/json"}
        ) as response:
            text = await response.text()
        if response.status != 200:
            raise BenchError(f"/v1/batch #{number}: HTTP {response.status} {text[:500]}")
        body = json.loads(text)
        if body.get("accepted") != expected or body.get("rejected"):
            raise BenchError(f"/v1/batch #{number}: expected {expected} accepted, got {text[:500]}")

    return send


def marker_query(markers: list[Marker]) -> str:
    fields = "\n".join(
        f'  m{n}: profile(identity: {{kind: "user_id", value: "{m.user_id}"}}) '
        "{ ... on Profile { stats } }"
        for n, m in enumerate(markers)
    )
    return "query {\n" + fields + "\n}"


async def ask_markers(
    session: aiohttp.ClientSession, markers: list[Marker], polls: list[float]
) -> bool:
    """Reads the markers' profiles in one GraphQL request; returns whether any was new."""
    asked = time.perf_counter()
    async with session.post("/graphql", json={"query": marker_query(markers)}) as response:
        text = await response.text()
    arrived = time.perf_counter()
    polls.append(arrived - asked)
    try:
        data = json.loads(text)["data"]
    except (ValueError, KeyError, TypeError):
        raise BenchError(f"GraphQL markers: HTTP {response.status} {text[:500]}") from None
    if data is None:
        raise BenchError(f"GraphQL markers: {text[:500]}")
    found = False
    for n, marker in enumerate(markers):
        stats = (data.get(f"m{n}") or {}).get("stats") or {}
        if (stats.get("event_counts") or {}).get(marker.name, 0) >= 1:
            marker.visible_at = arrived
            found = True
    return found


async def watch_markers(session: aiohttp.ClientSession, markers: list[Marker]) -> list[float]:
    """Notes when each marker first shows on its profile; returns the polls' durations.

    The builder applies the oldest events first, so each poll asks only for the oldest
    marker not seen yet, and only when that one shows for the next MARKER_ALIASES: the
    polling costs the API a few milliseconds per MARKER_POLL, not a 50-profile read.
    """
    polls: list[float] = []
    waiting = list(markers)
    while waiting:
        await asyncio.sleep(MARKER_POLL)
        sent = sorted(
            (m for m in waiting if m.sent_at is not None), key=lambda m: (m.sent_at, m.name)
        )
        if sent and await ask_markers(session, sent[:1], polls) and len(sent) > 1:
            await ask_markers(session, sent[1 : MARKER_ALIASES + 1], polls)
        waiting = [m for m in waiting if m.visible_at is None]
    return polls


async def run_ingest(
    base_url: str, uri: str, write_key: str, api_key: str, workload: Workload
) -> IngestResult:
    bodies = workload.bodies()
    timeout = aiohttp.ClientTimeout(total=60.0)
    senders = [
        aiohttp.ClientSession(
            base_url=base_url,
            headers={"Authorization": basic_auth(write_key)},
            connector=aiohttp.TCPConnector(limit=1),
            timeout=timeout,
        )
        for _ in range(SENDERS)
    ]
    reader = aiohttp.ClientSession(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        connector=aiohttp.TCPConnector(limit=1),
        timeout=timeout,
    )
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    profiles = client[DATABASE]["profiles"]
    markers = list(workload.markers.values())
    total = len(workload.events)

    async def applied_so_far() -> int:
        # Every applied event adds one to its profile's `stats.event_count`; summing
        # a few thousand profiles is cheap, while any query over the event log's
        # status makes SecantusDB read every matching event and starve the builder.
        rows = await (
            await profiles.aggregate(
                [
                    {"$match": {"merged_into": None}},
                    {"$group": {"_id": None, "n": {"$sum": "$stats.event_count"}}},
                ]
            )
        ).to_list()
        return int(rows[0]["n"]) if rows else 0

    try:
        sending_done = asyncio.Event()
        started = time.perf_counter()

        async def watch_applied() -> float:
            last_progress = last_fall = started
            last_left: int | None = None
            while True:
                await asyncio.sleep(APPLIED_POLL)
                now = time.perf_counter()
                if not sending_done.is_set():
                    continue
                left = total - await applied_so_far()
                if left == 0:
                    return now - started
                if now - last_progress >= PROGRESS_EVERY:
                    last_progress = now
                    if last_left is None or left < last_left:
                        last_left, last_fall = left, now
                    elif now - last_fall > STALL_TIMEOUT:
                        raise BenchError(
                            f"{left:,} events pending, none applied for {STALL_TIMEOUT:.0f}s"
                        )
                    seen = sum(m.visible_at is not None for m in markers)
                    print(
                        f"  {now - started:5.0f}s: {left:,} pending, "
                        f"{seen}/{len(markers)} markers visible",
                        flush=True,
                    )

        try:
            async with asyncio.TaskGroup() as group:
                applied = group.create_task(watch_applied())
                polls = group.create_task(watch_markers(reader, markers))
                workers = [sender(s, bodies, workload) for s in senders]
                acks = await closed_loop(workers, range(len(bodies)), "ack")
                sending_done.set()
                pending = total - await applied_so_far()
                print(
                    f"sent {len(workload.events):,} events in {acks.elapsed:.1f}s "
                    f"({len(workload.events) / acks.elapsed:,.0f}/s); {pending:,} pending then",
                    flush=True,
                )
        except ExceptionGroup as group:
            raise _first(group) from None
        await check_kindred(client, workload)
        return IngestResult(acks, applied.result(), pending, markers, polls.result())
    finally:
        for session in [*senders, reader]:
            await session.close()
        await client.close()


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """Returns the first leaf exception of a (nested) exception group."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def check_kindred(client: AsyncMongoClient[dict[str, Any]], workload: Workload) -> None:
    db = client[DATABASE]
    applied = await db[EVENTS].count_documents({"status": APPLIED})
    pipeline = [
        {"$match": {"merged_into": None}},
        {"$group": {"_id": None, "n": {"$sum": 1}, "events": {"$sum": "$stats.event_count"}}},
    ]
    found = [doc async for doc in await db[PROFILES].aggregate(pipeline)]
    got = (applied, found[0]["n"], found[0]["events"]) if found else (applied, 0, 0)
    want = (len(workload.events), workload.people, len(workload.events))
    if got != want:
        raise BenchError(f"Kindred: (applied events, profiles, events counted) = {got}, not {want}")


# --- the report -----------------------------------------------------------------------------


def latency_row(name: str, samples: list[float]) -> list[str]:
    if not samples:
        return [name, "0", "-", "-", "-"]
    return [
        name,
        f"{len(samples):,}",
        f"{percentile(samples, 50) * 1000:,.0f}",
        f"{percentile(samples, 99) * 1000:,.0f}",
        f"{max(samples) * 1000:,.0f}",
    ]


def report(result: IngestResult, raw: Timing, total: int) -> None:
    ack_rate = total / result.acks.elapsed
    applied_rate = total / result.applied_after
    raw_rate = total / raw.elapsed
    visible = [m.visible_at - m.sent_at for m in result.markers if m.visible_at and m.sent_at]
    print(f"\nIngestion ({total:,} events, {SENDERS} senders, batches of {BATCH})")
    rows = [
        ["acknowledged (sending phase)", f"{ack_rate:,.0f}", f"{result.acks.elapsed:.1f}"],
        [
            "applied (first send to none pending)",
            f"{applied_rate:,.0f}",
            f"{result.applied_after:.1f}",
        ],
        ["raw bulk_write upserts", f"{raw_rate:,.0f}", f"{raw.elapsed:.1f}"],
    ]
    print_table(["figure", "events/s", "seconds"], rows)
    print()
    print_table(
        ["latency", "samples", "p50 ms", "p99 ms", "max ms"],
        [
            latency_row(f"ack per /v1/batch ({BATCH} events)", result.acks.latencies),
            latency_row("event to visible on profile", visible),
            latency_row(f"raw bulk_write of {BATCH}", raw.latencies),
            latency_row("(GraphQL marker poll)", result.marker_polls),
        ],
    )
    print(f"\n{result.pending_when_sent:,} events were still pending when sending ended.")
    print("\nRatios")
    print_table(
        ["ratio", "value", "target", "result"],
        [
            ratio_row(
                "applied events/s / raw upserts/s",
                applied_rate / raw_rate,
                0.5,
                higher_is_better=True,
            ),
            ratio_row(
                "acknowledged events/s / raw upserts/s",
                ack_rate / raw_rate,
                None,
                higher_is_better=True,
            ),
        ],
    )


def main() -> int:
    args = parse_args()
    print_workload(args)
    started = time.perf_counter()
    workload = build_workload(args.people, args.events, args.markers)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="kindred-bench-") as tmp,
            EmbeddedServer(Path(tmp) / "data") as server,
        ):
            uri = server.uri
            with phase(f"raw baseline: {args.events:,} upserts"):
                raw = asyncio.run(run_raw(uri, workload))
            write_key, api_key = with_async_db(uri, DATABASE, create_keys)
            api = ApiServer(uri, DATABASE, Path(tmp) / "api.log")
            try:
                with phase("starting kindred serve"):
                    api.start()
                print(f"sending {args.events:,} events…", flush=True)
                try:
                    result = asyncio.run(run_ingest(api.url, uri, write_key, api_key, workload))
                except (BenchError, aiohttp.ClientError) as exc:
                    raise BenchError(f"{exc}\nkindred serve: {api.log_tail()}") from exc
            finally:
                api.stop()
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    report(result, raw, args.events)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
