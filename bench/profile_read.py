"""Profile reads: GraphQL and REST through a live `kindred serve`, against the raw driver.

Workload: 10,000 profiles with 20 traits each (first_name, last_name, city, plan, ltv and
t00..t14), each known by one email identity `user{i}@example.com`, in an embedded
SecantusDB started as `kindred serve` starts it (a data directory, sync-on-commit). The
data is seeded directly with pymongo `insert_many` (batches of 1,000) in the exact shape
`ProfileStore.insert_profiles` + `update_traits` write; seeding bypasses trait history
because this benchmark measures reads. The API runs as its own process (`kindred serve`,
KINDRED_ENV=prod) against that same server.

Point reads, 8 concurrent clients (asyncio tasks; one keep-alive HTTP connection each, or
one shared async driver client), 200 warm-up then 3,000 measured requests per mode, for
emails drawn at random with a fixed seed, each asking for 5 of the 20 traits:

1. GraphQL `profile(identity: {kind: "email", value: $e}) { ... on Profile { traits(keys) } }`
2. REST `GET /v1/profiles/email/{email}?fields=...`
3. the raw driver: `identities.find_one` then `profiles.find_one` with a projection

Paging: GraphQL `profiles(first: 500, after: $after)` through every profile, one client,
sequential pages, against a raw `find().sort("_id").batch_size(500)` reading them all.

Targets: GraphQL p50 <= 2.0x raw, REST p50 <= 1.5x raw, GraphQL paging >= 0.5x raw rows/s.
`--profiles N` and `--requests N` make quick runs. Exits 0 on MISS (it is a measurement).
"""

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from common import (
    ApiServer,
    BenchError,
    Timing,
    closed_loop,
    phase,
    print_table,
    ratio_row,
    with_async_db,
)
from pymongo import AsyncMongoClient, MongoClient

from app.auth import KeyStore, Scope
from app.embedded import EmbeddedServer
from app.mongo import ensure_indexes, index_registry
from identity.normalize import identity_key
from identity.store import IDENTITIES
from profiles.ids import new_profile_id
from profiles.store import PROFILES

DATABASE = "kindred_bench"
CLIENTS = 8
ROUNDS = 3
WARMUP = 200
PAGE = 500
BATCH = 1_000
SEED = 20261124
PAGING_PASSES = 3
READ_KEYS = ["first_name", "last_name", "city", "plan", "ltv"]
OTHER_KEYS = [f"t{i:02d}" for i in range(15)]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

FIRST_NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"]
LAST_NAMES = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]
CITIES = ["Lyon", "Porto", "Leeds", "Graz", "Turku", "Gent", "Brno", "Cork"]
PLANS = ["free", "starter", "pro", "enterprise"]

PROFILE_QUERY = """
query($e: String!) {
  profile(identity: {kind: "email", value: $e}) {
    ... on Profile { traits(keys: ["first_name", "last_name", "city", "plan", "ltv"]) }
  }
}
"""
PAGE_QUERY = """
query($first: Int!, $after: String) {
  profiles(first: $first, after: $after) {
    edges { node { id traits(keys: ["first_name", "last_name", "city", "plan", "ltv"]) } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


def email(i: int) -> str:
    return f"user{i}@example.com"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=10_000, help="profiles to seed")
    parser.add_argument("--requests", type=int, default=3_000, help="measured requests per mode")
    args = parser.parse_args()
    if args.profiles < 1 or args.requests < 1:
        parser.error("--profiles and --requests must be positive")
    return args


def print_workload(args: argparse.Namespace) -> None:
    print("Profile reads (bench/profile_read.py)")
    print(
        f"  data:     {args.profiles:,} profiles x 20 traits ({', '.join(READ_KEYS)}, "
        "t00..t14),\n"
        "            one email identity each (user{i}@example.com)\n"
        "  seeding:  pymongo insert_many, batches of 1,000, in the shape ProfileStore writes;\n"
        "            it bypasses trait history because this benchmark measures reads\n"
        "  server:   embedded SecantusDB in a temp data dir (sync-on-commit, as kindred serve)\n"
        "  API:      `kindred serve` (uvicorn) in its own process, KINDRED_ENV=prod\n"
        f"  reads:    {CLIENTS} concurrent clients, {WARMUP} warm-up + {args.requests:,} measured "
        "requests per mode,\n"
        f"            random emails (seed {SEED}), 5 of 20 traits: GraphQL profile, REST "
        "GET, raw driver\n"
        f"  paging:   GraphQL profiles(first: {PAGE}) through all profiles vs a raw sorted "
        f"cursor\n            (batch_size {PAGE}); median of {PAGING_PASSES} passes after one "
        "warm-up pass"
    )
    print(flush=True)


# --- setup --------------------------------------------------------------------------------


def profile_docs(start: int, stop: int) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yields (profile, identity) documents for users start..stop-1."""
    rng = random.Random(SEED + start)
    for i in range(start, stop):
        address = email(i)
        observed = T0 + timedelta(minutes=i)
        values: dict[str, Any] = {
            "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
            "last_name": LAST_NAMES[(i // 8) % len(LAST_NAMES)],
            "city": CITIES[rng.randrange(len(CITIES))],
            "plan": PLANS[rng.randrange(len(PLANS))],
            "ltv": round(rng.uniform(0, 5_000), 2),
        }
        for n, key in enumerate(OTHER_KEYS):
            values[key] = rng.randrange(1_000_000) if n % 3 == 0 else f"value-{i}-{n}"
        profile_id = new_profile_id()
        profile = {
            "_id": profile_id,
            "identifiers": [{"kind": "email", "value": address}],
            "traits": {
                key: {"value": value, "observed_at": observed, "source": "web"}
                for key, value in values.items()
            },
            "stats": {},
            "computed": {},
            "segments": [],
            "consent": {},
            "version": 1,  # insert_profiles writes 0; one update_traits makes it 1
            "created_at": T0,
            "updated_at": observed,
            "merged_into": None,
        }
        identity = {
            "_id": identity_key("email", address),
            "profile_id": profile_id,
            "linked_at": T0,
        }
        yield profile, identity


def seed(uri: str, count: int) -> None:
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:
        db = client[DATABASE]
        for start in range(0, count, BATCH):
            pairs = list(profile_docs(start, min(start + BATCH, count)))
            db[PROFILES].insert_many([p for p, _ in pairs], ordered=False)
            db[IDENTITIES].insert_many([i for _, i in pairs], ordered=False)
        found = (db[PROFILES].count_documents({}), db[IDENTITIES].count_documents({}))
    if found != (count, count):
        raise BenchError(f"seeded {found} profiles/identities, expected {count} each")


async def _create_key(db: Any) -> str:
    _, secret = await KeyStore(db).create(name="bench-profile-read", scopes=[Scope.PROFILES_READ])
    return secret


# --- point reads --------------------------------------------------------------------------


class Failures:
    """Counts wrong answers of one mode and keeps the first, for the abort message."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.count = 0
        self.first = ""

    def add(self, detail: str) -> None:
        self.count += 1
        if not self.first:
            self.first = detail[:500]

    def check(self) -> None:
        if self.count:
            raise BenchError(f"{self.mode}: {self.count} wrong answers; first: {self.first}")


def has_read_traits(traits: Any) -> bool:
    return isinstance(traits, dict) and all(traits.get(k) is not None for k in READ_KEYS)


async def measure(
    name: str,
    workers: list[Callable[[str], Awaitable[None]]],
    warmup: list[str],
    measured: list[str],
    failures: Failures,
) -> Timing:
    print(f"{name}…", end=" ", flush=True)
    await closed_loop(workers, warmup)
    failures.check()
    timing = await closed_loop(workers, measured, name)
    failures.check()
    print(f"{timing.rate:,.0f} req/s, p50 {timing.p50_ms:.2f} ms", flush=True)
    return timing


def http_sessions(base_url: str, secret: str) -> list[aiohttp.ClientSession]:
    # aiohttp's C-accelerated client, as a production ESP's client would be: with
    # a pure-Python client the load generator, sharing 2 cores with the server,
    # would dominate what is measured.
    return [
        aiohttp.ClientSession(
            base_url=base_url,
            headers={"Authorization": f"Bearer {secret}"},
            connector=aiohttp.TCPConnector(limit=1),
            timeout=aiohttp.ClientTimeout(total=30.0),
        )
        for _ in range(CLIENTS)
    ]


async def _json(response: aiohttp.ClientResponse) -> Any:
    try:
        return await response.json(content_type=None)
    except ValueError:
        return None


def graphql_worker(
    session: aiohttp.ClientSession, failures: Failures
) -> Callable[[str], Awaitable[None]]:
    async def read(address: str) -> None:
        payload = {"query": PROFILE_QUERY, "variables": {"e": address}}
        async with session.post("/graphql", json=payload) as response:
            body = await _json(response)
        try:
            traits = body["data"]["profile"]["traits"]
        except (KeyError, TypeError):
            traits = None
        if response.status != 200 or not has_read_traits(traits):
            failures.add(f"{address}: HTTP {response.status} {body}")

    return read


def rest_worker(
    session: aiohttp.ClientSession, failures: Failures
) -> Callable[[str], Awaitable[None]]:
    params = {"fields": ",".join(READ_KEYS)}

    async def read(address: str) -> None:
        async with session.get(f"/v1/profiles/email/{address}", params=params) as response:
            body = await _json(response)
        if response.status != 200 or not has_read_traits(body):
            failures.add(f"{address}: HTTP {response.status} {body}")

    return read


def raw_worker(db: Any, failures: Failures) -> Callable[[str], Awaitable[None]]:
    identities, profiles = db[IDENTITIES], db[PROFILES]
    projection = {f"traits.{k}": 1 for k in READ_KEYS}

    async def read(address: str) -> None:
        owner = await identities.find_one({"_id": "email:" + address})
        doc = None
        if owner is not None:
            doc = await profiles.find_one({"_id": owner["profile_id"]}, projection)
        traits = {k: v.get("value") for k, v in doc["traits"].items()} if doc else None
        if not has_read_traits(traits):
            failures.add(f"{address}: identity {owner!r}, profile {doc!r}")

    return read


# --- paging -------------------------------------------------------------------------------


async def page_graphql(session: aiohttp.ClientSession) -> int:
    rows, after = 0, None
    while True:
        payload = {"query": PAGE_QUERY, "variables": {"first": PAGE, "after": after}}
        async with session.post("/graphql", json=payload) as response:
            body = await _json(response)
        try:
            connection = body["data"]["profiles"]
            edges = connection["edges"]
        except (KeyError, TypeError):
            raise BenchError(f"GraphQL paging: HTTP {response.status} {str(body)[:500]}") from None
        for edge in edges:
            if not has_read_traits(edge["node"]["traits"]):
                raise BenchError(f"GraphQL paging: node without the 5 traits: {edge}")
        rows += len(edges)
        if not connection["pageInfo"]["hasNextPage"]:
            return rows
        after = connection["pageInfo"]["endCursor"]


async def page_raw(db: Any) -> int:
    projection = {f"traits.{k}": 1 for k in READ_KEYS}
    cursor = db[PROFILES].find({"merged_into": None}, projection).sort("_id", 1).batch_size(PAGE)
    rows = 0
    async for doc in cursor:
        if not has_read_traits({k: v.get("value") for k, v in doc["traits"].items()}):
            raise BenchError(f"raw paging: document without the 5 traits: {doc}")
        rows += 1
    return rows


async def rows_per_second(
    name: str, read_all: Callable[[], Awaitable[int]], expected: int
) -> float:
    """Returns the median rows/s of PAGING_PASSES passes, after one warm-up pass."""
    print(f"{name}…", end=" ", flush=True)
    rates = []
    for attempt in range(PAGING_PASSES + 1):
        started = time.perf_counter()
        rows = await read_all()
        elapsed = time.perf_counter() - started
        if rows != expected:
            raise BenchError(f"{name}: saw {rows} rows, expected {expected}")
        if attempt:
            rates.append(rows / elapsed)
    rate = sorted(rates)[len(rates) // 2]
    print(f"{rate:,.0f} rows/s ({expected:,} rows each pass)", flush=True)
    return rate


# --- the run ------------------------------------------------------------------------------


async def run_reads(
    base_url: str, uri: str, secret: str, args: argparse.Namespace
) -> tuple[dict[str, list[Timing]], dict[str, float]]:
    rng = random.Random(SEED)
    emails = [email(rng.randrange(args.profiles)) for _ in range(WARMUP + args.requests)]
    warmup, measured = emails[:WARMUP], emails[WARMUP:]
    rounds: dict[str, list[Timing]] = {"GraphQL": [], "REST": [], "raw": []}
    clients = http_sessions(base_url, secret)
    raw: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db = raw[DATABASE]
        failures = {mode: Failures(mode) for mode in rounds}
        workers = {
            "GraphQL": [graphql_worker(c, failures["GraphQL"]) for c in clients],
            "REST": [rest_worker(c, failures["REST"]) for c in clients],
            "raw": [raw_worker(db, failures["raw"])] * CLIENTS,
        }
        # The modes take turns, round after round, so that a passing disturbance on
        # this shared machine hits all of them and each ratio compares neighbours.
        chunk = len(measured) // ROUNDS
        for number in range(ROUNDS):
            part = measured[number * chunk : (number + 1) * chunk]
            print(f"round {number + 1}/{ROUNDS}", flush=True)
            for mode in rounds:
                rounds[mode].append(
                    await measure(f"  {mode}", workers[mode], warmup, part, failures[mode])
                )
        rates = {
            "GraphQL": await rows_per_second(
                "GraphQL paging", lambda: page_graphql(clients[0]), args.profiles
            ),
            "raw": await rows_per_second("raw cursor", lambda: page_raw(db), args.profiles),
        }
    finally:
        for client in clients:
            await client.close()
        await raw.close()
    return rounds, rates


def combined(timings: list[Timing]) -> Timing:
    """Returns one timing holding every round's requests."""
    return Timing(
        timings[0].name,
        [latency for t in timings for latency in t.latencies],
        sum(t.elapsed for t in timings),
    )


def median_ratio(over: list[Timing], under: list[Timing], figure: str) -> float:
    """Returns the median over rounds of `figure` of one mode divided by another's."""
    return statistics.median(
        getattr(a, figure) / getattr(b, figure) for a, b in zip(over, under, strict=True)
    )


def report(rounds: dict[str, list[Timing]], rates: dict[str, float]) -> None:
    graphql, rest, raw = (combined(rounds[mode]) for mode in ("GraphQL", "REST", "raw"))
    print(f"\nPoint reads (8 concurrent clients, 5 of 20 traits; {ROUNDS} rounds together)")
    print_table(
        ["mode", "requests", "p50 ms", "p99 ms", "req/s"],
        [
            [
                t.name,
                f"{len(t.latencies):,}",
                f"{t.p50_ms:.2f}",
                f"{t.p99_ms:.2f}",
                f"{t.rate:,.0f}",
            ]
            for t in (graphql, rest, raw)
        ],
    )
    print("\nPaging (one client, pages of 500)")
    print_table(
        ["mode", "rows/s"],
        [["GraphQL profiles", f"{rates['GraphQL']:,.0f}"], ["raw cursor", f"{rates['raw']:,.0f}"]],
    )
    print("\nRatios")
    print_table(
        ["ratio", "value", "target", "result"],
        [
            ratio_row(
                "GraphQL p50 / raw p50 (median of rounds)",
                median_ratio(rounds["GraphQL"], rounds["raw"], "p50_ms"),
                2.0,
                higher_is_better=False,
            ),
            ratio_row(
                "REST p50 / raw p50 (median of rounds)",
                median_ratio(rounds["REST"], rounds["raw"], "p50_ms"),
                1.5,
                higher_is_better=False,
            ),
            ratio_row(
                "GraphQL req/s / raw req/s",
                median_ratio(rounds["GraphQL"], rounds["raw"], "rate"),
                None,
                higher_is_better=True,
            ),
            ratio_row(
                "REST req/s / raw req/s",
                median_ratio(rounds["REST"], rounds["raw"], "rate"),
                None,
                higher_is_better=True,
            ),
            ratio_row(
                "GraphQL paging rows/s / raw rows/s",
                rates["GraphQL"] / rates["raw"],
                0.5,
                higher_is_better=True,
            ),
        ],
    )


def main() -> int:
    args = parse_args()
    print_workload(args)
    started = time.perf_counter()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="kindred-bench-") as tmp,
            EmbeddedServer(Path(tmp) / "data") as server,
        ):
            uri = server.uri
            with phase("indexes"):
                with_async_db(uri, DATABASE, lambda db: ensure_indexes(db, index_registry()))
            with phase(f"seeding {args.profiles:,} profiles"):
                seed(uri, args.profiles)
            secret = with_async_db(uri, DATABASE, _create_key)
            api = ApiServer(uri, DATABASE, Path(tmp) / "api.log")
            try:
                with phase("starting kindred serve"):
                    api.start()
                try:
                    rounds, rates = asyncio.run(run_reads(api.url, uri, secret, args))
                except (BenchError, aiohttp.ClientError) as exc:
                    raise BenchError(f"{exc}\nkindred serve: {api.log_tail()}") from exc
            finally:
                api.stop()
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    report(rounds, rates)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
