"""Demo data: a seeded e-commerce history, sent through the public ingest API.

`generate(seed=, people=, days=, now=)` is a pure function: the same arguments
give the same people and the same calls, message ids included. Timestamps are
offsets back from `now`, so a history loaded today ends today; `kindred demo`
passes the current time, tests pass a fixed one.

What the history holds, per person (a customer record of the shop):

- web sessions on one device (an `anonymousId`): `page` calls, `Product Viewed`,
  `Product Added`, `Checkout Started` and `Order Completed` (with `order_id`,
  `revenue`, `products`), anonymous until the person signs up;
- `identify` on sign-up (first and last name, email, often a phone, city) and
  at the first order (address, postcode, city, phone); a few people move later
  and identify with a new address;
- `Email Opened` and `Email Link Clicked` for weekly campaigns, once subscribed;
- about one person in eight browses on two devices (two `anonymousId`s) before
  signing up on one and logging in on the other, so identity resolution merges
  the two anonymous profiles into one;
- a sixth of the people never sign up and stay anonymous visitors.

Typo duplicates, for identity resolution to find later. About one record in
forty (every index `i` with `i % 40 == 17`) is a second account of an earlier
person, with a user id of its own, so the automatic graph never merges it (it
reports "merge refused: two user ids" where an exact key is shared). Three kinds,
in turn:

- `email_typo`: same name and city, a letter dropped from the email's local
  part (`jon.smith@` for `john.smith@`), no phone;
- `name_typo_same_phone`: two letters of the first name swapped (`Cahterine`),
  same phone written without spaces, an email at another domain;
- `surname_typo_same_address`: a letter of the last name doubled or dropped,
  same street address and postcode, an email of another pattern.

`Demo.duplicates` lists every pair with its kind.
"""

import asyncio
import dataclasses
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from segment.analytics.client import Client

from app.eventlog import EventLog
from app.ingest.errors import SourceExists
from app.ingest.store import SourceStore
from app.mongo import Document, create_client
from app.settings import Settings
from profiles.segments.service import SegmentService
from profiles.segments.store import SegmentStore
from profiles.webhooks.service import WebhookService

log = logging.getLogger(__name__)

DEMO_SOURCE = "demo"
DEFAULT_PEOPLE = 2_000
DEFAULT_DAYS = 90
DEFAULT_SEED = 1
# Events per /v1/batch request: the SDK also stops a batch at 475 KB, under the
# server's 500 KB, and demo events are under 1 KB each.
BATCH_SIZE = 400
QUEUE_SIZE = 4 * BATCH_SIZE

SHOP = "https://shop.example"
CURRENCY = "GBP"
# The last visit starts this long before `now`, so that no event is in the future.
SESSION_ROOM = 3 * 3600
DUPLICATE_EVERY = 40
DUPLICATE_OFFSET = 17

# --- built-in lists (no network, no downloaded data) ------------------------------------

FIRST_NAMES = (
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Grace", "Sophia", "Lily", "Emily", "Freya",
    "Charlotte", "Catherine", "Hannah", "Chloe", "Ella", "Ruby", "Zara", "Priya", "Aisha",
    "Niamh", "Sarah", "Laura", "Rebecca", "Helen", "Megan", "John", "Oliver", "George", "Harry",
    "Jack", "Noah", "Leo", "Oscar", "Charlie", "Thomas", "James", "William", "Henry", "Daniel",
    "Samuel", "Joseph", "David", "Michael", "Matthew", "Adam", "Ryan", "Arjun", "Mohammed",
    "Liam", "Ethan", "Lucas", "Callum", "Rhys", "Owen", "Stephen",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "Thomas", "Clarke", "Jackson", "Wood", "Harris", "Edwards", "Turner", "Martin", "Cooper",
    "Hill", "Ward", "Hughes", "Moore", "Clark", "King", "Harrison", "Lewis", "Baker", "Lee",
    "Allen", "Morris", "Khan", "Scott", "Watson", "Davis", "Parker", "James", "Bennett",
    "Young", "Phillips", "Richardson", "Mitchell", "Campbell", "Murphy", "Kelly", "Shah",
    "Begum", "Nguyen", "Kowalski", "O'Brien", "MacDonald", "Fraser",
)  # fmt: skip
# City, postcode district prefixes, weight (roughly by population).
CITIES = (
    ("London", ("E1", "N1", "SE1", "SW4", "W2", "NW3", "E14", "SW11"), 9),
    ("Manchester", ("M1", "M4", "M14", "M20"), 3),
    ("Birmingham", ("B1", "B5", "B15", "B29"), 3),
    ("Leeds", ("LS1", "LS6", "LS8"), 2),
    ("Glasgow", ("G1", "G3", "G12"), 2),
    ("Bristol", ("BS1", "BS6", "BS8"), 2),
    ("Edinburgh", ("EH1", "EH3", "EH10"), 2),
    ("Liverpool", ("L1", "L8", "L17"), 2),
    ("Sheffield", ("S1", "S10", "S11"), 1),
    ("Cardiff", ("CF10", "CF11", "CF24"), 1),
    ("Newcastle upon Tyne", ("NE1", "NE2", "NE6"), 1),
    ("Nottingham", ("NG1", "NG5", "NG7"), 1),
    ("Brighton", ("BN1", "BN2", "BN3"), 1),
    ("Belfast", ("BT1", "BT7", "BT9"), 1),
    ("Cambridge", ("CB1", "CB2", "CB4"), 1),
    ("Oxford", ("OX1", "OX2", "OX4"), 1),
)
STREETS = (
    "High Street", "Station Road", "Church Lane", "Victoria Road", "Park Avenue", "Mill Lane",
    "Queen Street", "King's Road", "Manor Way", "The Crescent", "Green Lane", "Albert Street",
    "Chapel Road", "Orchard Close", "New Road", "Windsor Gardens", "Grange Road", "York Place",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example")
USER_AGENTS = {
    "desktop": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.5 Safari/605.1.15",
    ),
    "mobile": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0 Mobile Safari/537.36",
    ),
}


@dataclass(frozen=True)
class Product:
    """An item of the demo shop's catalogue."""

    sku: str
    name: str
    category: str
    price: float

    def properties(self, quantity: int = 1) -> dict[str, Any]:
        """Returns the product as Segment's e-commerce spec describes it."""
        return {
            "product_id": self.sku,
            "sku": self.sku,
            "name": self.name,
            "category": self.category,
            "price": self.price,
            "quantity": quantity,
            "currency": CURRENCY,
        }


CATALOGUE = (
    Product("TSH-001", "Organic Cotton T-Shirt", "Tops", 18.0),
    Product("TSH-002", "Striped Breton Top", "Tops", 32.0),
    Product("JMP-001", "Merino Crew Jumper", "Knitwear", 65.0),
    Product("JMP-002", "Chunky Cable Cardigan", "Knitwear", 79.0),
    Product("JNS-001", "Slim Selvedge Jeans", "Denim", 89.0),
    Product("JNS-002", "Wide Leg Jeans", "Denim", 75.0),
    Product("DRS-001", "Linen Midi Dress", "Dresses", 69.0),
    Product("DRS-002", "Wrap Jersey Dress", "Dresses", 55.0),
    Product("JKT-001", "Waxed Cotton Jacket", "Outerwear", 149.0),
    Product("JKT-002", "Recycled Puffer Coat", "Outerwear", 129.0),
    Product("SHO-001", "Leather Chelsea Boots", "Shoes", 120.0),
    Product("SHO-002", "Canvas Trainers", "Shoes", 45.0),
    Product("SHO-003", "Suede Loafers", "Shoes", 95.0),
    Product("ACC-001", "Wool Beanie", "Accessories", 15.0),
    Product("ACC-002", "Leather Belt", "Accessories", 29.0),
    Product("ACC-003", "Canvas Tote Bag", "Accessories", 12.5),
    Product("ACC-004", "Silk Scarf", "Accessories", 39.0),
    Product("SOC-001", "Bamboo Socks, 3 pack", "Accessories", 9.99),
    Product("HOM-001", "Linen Cushion Cover", "Home", 22.0),
    Product("HOM-002", "Stoneware Mug Set", "Home", 28.0),
)
CATEGORIES = tuple(sorted({p.category for p in CATALOGUE}))
CAMPAIGNS = (
    ("New season: the knitwear edit", "/collections/knitwear"),
    ("Free delivery this weekend", "/offers/free-delivery"),
    ("Back in stock: Chelsea boots", "/products/sho-001"),
    ("Our denim guide", "/guides/denim"),
    ("20% off outerwear", "/collections/outerwear"),
    ("Gifts under £30", "/collections/gifts"),
    ("You left something behind", "/cart"),
)


# --- the generator (pure: no I/O, no clock) ---------------------------------------------


class CallType(StrEnum):
    """The Segment calls the demo makes."""

    IDENTIFY = "identify"
    TRACK = "track"
    PAGE = "page"


class Persona(StrEnum):
    """How a demo person behaves over the period."""

    VISITOR = "visitor"  # browses, never signs up
    SUBSCRIBER = "subscriber"  # signs up for the newsletter, never orders
    SHOPPER = "shopper"  # one or two orders
    LOYAL = "loyal"  # many sessions and orders, opens most emails
    LAPSED = "lapsed"  # one order early in the period, then gone


PERSONA_WEIGHTS = {
    Persona.VISITOR: 16,
    Persona.SUBSCRIBER: 16,
    Persona.SHOPPER: 42,
    Persona.LOYAL: 14,
    Persona.LAPSED: 12,
}


class DuplicateKind(StrEnum):
    """How a typo duplicate differs from the person it duplicates."""

    EMAIL_TYPO = "email_typo"
    NAME_TYPO_SAME_PHONE = "name_typo_same_phone"
    SURNAME_TYPO_SAME_ADDRESS = "surname_typo_same_address"


DUPLICATE_KINDS = tuple(DuplicateKind)


@dataclass(frozen=True)
class Call:
    """One Segment call: `name` is the track event or page name, `data` its properties or traits."""

    type: CallType
    message_id: str
    timestamp: datetime
    user_id: str | None
    anonymous_id: str | None
    name: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Identity:
    """Who a person says they are."""

    first_name: str
    last_name: str
    email: str
    phone: str | None
    city: str
    postcode: str
    address: str


@dataclass(frozen=True)
class Person:
    """A customer record of the demo shop and the devices it browses on."""

    index: int
    persona: Persona
    user_id: str | None  # None for visitors, who never sign up
    identity: Identity
    anonymous_ids: tuple[str, ...]
    duplicate_of: int | None = None
    duplicate_kind: DuplicateKind | None = None


@dataclass(frozen=True)
class Duplicate:
    """A second account of one person, with a typo."""

    original: Person
    duplicate: Person
    kind: DuplicateKind


@dataclass(frozen=True)
class Demo:
    """A generated history: the people, and every call in time order."""

    seed: int
    people: tuple[Person, ...]
    calls: tuple[Call, ...]
    duplicates: tuple[Duplicate, ...]

    def two_device_people(self) -> tuple[Person, ...]:
        """Returns the people who browse on two devices."""
        return tuple(p for p in self.people if len(p.anonymous_ids) > 1)


def generate(*, seed: int, people: int, days: int, now: datetime) -> Demo:
    """Returns the demo history for a seed, ending at `now`; the same arguments, the same demo.

    Person `i` depends only on the seed and on persons before it, so a smaller
    demo is the start of a larger one with the same seed and dates.
    """
    if people < 1 or days < 1:
        raise ValueError("a demo needs at least one person and one day")
    now = _ms(now.astimezone(UTC))
    start = now - timedelta(days=days)
    campaigns = _campaigns(start, now)
    taken_emails: set[str] = set()
    persons: list[Person] = []
    duplicates: list[Duplicate] = []
    calls: list[Call] = []
    for index in range(people):
        rng = random.Random(f"kindred-demo:{seed}:{index}")
        kind = DUPLICATE_KINDS[(index // DUPLICATE_EVERY) % len(DUPLICATE_KINDS)]
        original = _original_for(index, kind, persons, rng)
        if original is None:
            person = _new_person(index, rng, taken_emails)
        else:
            person = _duplicate(index, original, kind, rng, taken_emails)
            duplicates.append(Duplicate(original, person, kind))
        taken_emails.add(person.identity.email)
        persons.append(person)
        calls.extend(_history(person, rng, seed=seed, start=start, now=now, campaigns=campaigns))
    calls.sort(key=lambda c: (c.timestamp, c.message_id))
    return Demo(seed, tuple(persons), tuple(calls), tuple(duplicates))


def _ms(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _anonymous_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _persona(rng: random.Random) -> Persona:
    return rng.choices(list(PERSONA_WEIGHTS), weights=list(PERSONA_WEIGHTS.values()))[0]


def _original_for(
    index: int, kind: DuplicateKind, persons: list[Person], rng: random.Random
) -> Person | None:
    if index % DUPLICATE_EVERY != DUPLICATE_OFFSET:
        return None
    # A duplicate copies someone who signed up and is not a duplicate themselves.
    candidates = [
        p
        for p in persons
        if p.user_id is not None
        and p.duplicate_of is None
        and (p.identity.phone is not None or kind is not DuplicateKind.NAME_TYPO_SAME_PHONE)
    ]
    return rng.choice(candidates) if candidates else None


def _address(rng: random.Random, *, city: str | None = None) -> tuple[str, str, str]:
    if city is None:
        city = rng.choices([c for c, *_ in CITIES], weights=[w for *_, w in CITIES])[0]
    districts = next(d for c, d, _ in CITIES if c == city)
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    inward = f"{rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"
    return city, f"{rng.choice(districts)} {inward}", f"{rng.randint(1, 180)} {rng.choice(STREETS)}"


def _phone(index: int) -> str:
    # Unique per person. A valid UK mobile number: Ofcom's fictional 07700 900xxx range
    # is not a valid number to phonenumbers, so it would never become an identity key.
    return f"+44 7911 {100000 + index % 900000:06d}"


def _email(first: str, last: str, rng: random.Random, taken: set[str]) -> str:
    first_l = first.lower()
    last_l = "".join(ch for ch in last.lower() if ch.isalpha())
    patterns = (
        f"{first_l}.{last_l}",
        f"{first_l}{last_l}",
        f"{first_l[0]}.{last_l}",
        f"{first_l}_{last_l}",
        f"{last_l}.{first_l}",
    )
    local = rng.choice(patterns)
    domain = rng.choice(EMAIL_DOMAINS)
    email = f"{local}@{domain}"
    while email in taken:
        email = f"{local}{rng.randint(1, 99)}@{domain}"
    return email


def _devices(rng: random.Random, count: int) -> tuple[str, ...]:
    return tuple(_anonymous_id(rng) for _ in range(count))


def _new_person(index: int, rng: random.Random, taken: set[str]) -> Person:
    persona = _persona(rng)
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city, postcode, address = _address(rng)
    identity = Identity(
        first_name=first,
        last_name=last,
        email=_email(first, last, rng, taken),
        phone=_phone(index) if rng.random() < 0.65 else None,
        city=city,
        postcode=postcode,
        address=address,
    )
    two_devices = persona is not Persona.VISITOR and rng.random() < 0.15
    return Person(
        index=index,
        persona=persona,
        user_id=None if persona is Persona.VISITOR else f"usr_{_hex(rng, 12)}",
        identity=identity,
        anonymous_ids=_devices(rng, 2 if two_devices else 1),
    )


def _swap_letters(word: str, rng: random.Random) -> str:
    at = rng.randrange(1, len(word) - 2) if len(word) > 3 else 0
    return word[:at] + word[at + 1] + word[at] + word[at + 2 :]


def _drop_or_double(word: str, rng: random.Random) -> str:
    at = rng.randrange(1, len(word) - 1) if len(word) > 2 else 0
    if rng.random() < 0.5:
        return word[:at] + word[at + 1 :]
    return word[:at] + word[at] + word[at:]


def _email_typo(email: str, first: str, rng: random.Random) -> str:
    local, _, domain = email.partition("@")
    first_l = first.lower()
    if local.startswith(first_l) and len(first_l) > 3:
        # john.smith -> jon.smith: a letter of the first name missing.
        at = rng.randrange(1, len(first_l) - 1)
        return f"{first_l[:at]}{first_l[at + 1 :]}{local[len(first_l) :]}@{domain}"
    at = rng.randrange(1, len(local) - 1)
    return f"{local[:at]}{local[at + 1 :]}@{domain}"


def _duplicate(
    index: int, original: Person, kind: DuplicateKind, rng: random.Random, taken: set[str]
) -> Person:
    known = original.identity
    persona = rng.choice((Persona.SHOPPER, Persona.SUBSCRIBER))
    if kind is DuplicateKind.EMAIL_TYPO:
        email = _email_typo(known.email, known.first_name, rng)
        identity = Identity(
            known.first_name, known.last_name, email, None, *_address(rng, city=known.city)
        )
    elif kind is DuplicateKind.NAME_TYPO_SAME_PHONE:
        first = _swap_letters(known.first_name, rng)
        local = known.email.partition("@")[0]
        other_domains = [d for d in EMAIL_DOMAINS if not known.email.endswith("@" + d)]
        phone = (known.phone or "").replace(" ", "")  # the same number, typed differently
        identity = Identity(
            first,
            known.last_name,
            f"{local}@{rng.choice(other_domains)}",
            phone,
            known.city,
            known.postcode,
            known.address,
        )
    else:
        last = _drop_or_double(known.last_name, rng)
        identity = Identity(
            known.first_name,
            last,
            f"{known.first_name[0].lower()}{last.lower()}@{rng.choice(EMAIL_DOMAINS)}",
            None,
            known.city,
            known.postcode,
            known.address,
        )
    email = identity.email
    while email in taken:
        local, _, domain = identity.email.partition("@")
        email = f"{local}{rng.randint(1, 99)}@{domain}"
    return Person(
        index=index,
        persona=persona,
        user_id=f"usr_{_hex(rng, 12)}",
        identity=dataclasses.replace(identity, email=email),
        anonymous_ids=_devices(rng, 1),
        duplicate_of=original.index,
        duplicate_kind=kind,
    )


@dataclass(frozen=True)
class _Campaign:
    id: str
    name: str
    path: str
    sent_at: datetime


def _campaigns(start: datetime, now: datetime) -> tuple[_Campaign, ...]:
    # Weekly, the first three days into the period; like every time here, an offset from
    # `now` alone, so that the history generated at another time is the same one, shifted.
    found = []
    at = start + timedelta(days=3)
    week = 0
    while at < now - timedelta(hours=6):
        name, path = CAMPAIGNS[week % len(CAMPAIGNS)]
        found.append(_Campaign(f"cmp_{week + 1:03d}", name, path, at))
        at += timedelta(days=7)
        week += 1
    return tuple(found)


@dataclass(frozen=True)
class _Plan:
    session_starts: tuple[datetime, ...]
    signup_session: int | None
    order_sessions: frozenset[int]
    move_session: int | None


_SESSIONS = {
    Persona.VISITOR: (1, 3),
    Persona.SUBSCRIBER: (2, 5),
    Persona.SHOPPER: (2, 7),
    Persona.LOYAL: (6, 14),
    Persona.LAPSED: (2, 5),
}
_ORDERS = {
    Persona.VISITOR: (0, 0),
    Persona.SUBSCRIBER: (0, 0),
    Persona.SHOPPER: (1, 2),
    Persona.LOYAL: (3, 7),
    Persona.LAPSED: (1, 1),
}


def _plan(person: Person, rng: random.Random, start: datetime, now: datetime) -> _Plan:
    span = (now - start).total_seconds()
    low, high = _SESSIONS[person.persona]
    count = rng.randint(low, high)
    if len(person.anonymous_ids) > 1:
        count = max(count, 4)  # two anonymous visits, sign-up, a login on the other device
    first = rng.uniform(0, span * (0.3 if person.persona is Persona.LAPSED else 0.85))
    # A lapsed customer's visits end within three weeks of the first.
    last = (
        min(first + 21 * 86_400, span - SESSION_ROOM)
        if person.persona is Persona.LAPSED
        else span - SESSION_ROOM
    )
    offsets = sorted(rng.uniform(first, max(first, last)) for _ in range(count - 1))
    starts = tuple(_ms(start + timedelta(seconds=s)) for s in (first, *offsets))
    if person.user_id is None:
        return _Plan(starts, None, frozenset(), None)
    signup = 2 if len(person.anonymous_ids) > 1 else rng.randint(0, min(2, count - 1))
    orders = min(rng.randint(*_ORDERS[person.persona]), count - signup)
    order_sessions = frozenset(rng.sample(range(signup, count), orders)) if orders else frozenset()
    mover = orders > 0 and count - signup > 3 and rng.random() < 0.06
    move = rng.randint(signup + 2, count - 1) if mover else None
    return _Plan(starts, signup, order_sessions, move)


class _Writer:
    """Collects one person's calls, numbering their message ids."""

    def __init__(self, person: Person, seed: int) -> None:
        self.person = person
        self.prefix = f"demo-{seed}-{person.index:05d}"
        self.calls: list[Call] = []

    def add(
        self,
        type_: CallType,
        at: datetime,
        *,
        name: str | None = None,
        data: Mapping[str, Any] | None = None,
        anonymous_id: str | None,
        signed_in: bool,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self.calls.append(
            Call(
                type=type_,
                message_id=f"{self.prefix}-{len(self.calls):04d}",
                timestamp=_ms(at),
                user_id=self.person.user_id if signed_in else None,
                anonymous_id=anonymous_id,
                name=name,
                data=dict(data or {}),
                context=dict(context or {}),
            )
        )


def _history(
    person: Person,
    rng: random.Random,
    *,
    seed: int,
    start: datetime,
    now: datetime,
    campaigns: Iterable[_Campaign],
) -> list[Call]:
    plan = _plan(person, rng, start, now)
    writer = _Writer(person, seed)
    identity = person.identity
    city, postcode, address = identity.city, identity.postcode, identity.address
    devices = person.anonymous_ids
    kinds = ["desktop", "mobile"] if rng.random() < 0.5 else ["mobile", "desktop"]
    agents = {d: rng.choice(USER_AGENTS[k]) for d, k in zip(devices, kinds, strict=False)}
    signed_in: set[str] = set()
    ordered = False
    for number, at in enumerate(plan.session_starts):
        device = _device_for(devices, number, rng, two_device_plan=len(devices) > 1)
        session = _Session(writer, rng, at, device, agents[device], signed_in=device in signed_in)
        if number == plan.signup_session or (
            plan.signup_session is not None
            and number > plan.signup_session
            and not session.signed_in
        ):
            traits: dict[str, Any] = {
                "first_name": identity.first_name,
                "last_name": identity.last_name,
                "email": identity.email,
                "city": city,
            }
            if identity.phone is not None:
                traits["phone"] = identity.phone
            session.browse(rng.randint(1, 3))
            session.page("Sign Up" if number == plan.signup_session else "Sign In", "/account")
            session.identify(traits)
            signed_in.add(device)
        if number == plan.move_session:
            city, postcode, address = _address(rng)
            session.page("Account", "/account/address")
            session.identify({"city": city, "postcode": postcode, "address": address})
        if number in plan.order_sessions:
            products = session.shop(rng.randint(1, 3))
            session.checkout(products)
            if not ordered:
                details: dict[str, Any] = {"address": address, "postcode": postcode, "city": city}
                if identity.phone is not None:
                    details["phone"] = identity.phone
                session.identify(details | {"country": "GB"})
                ordered = True
            session.order(products, order_id=f"ORD-{seed}-{person.index:05d}-{number:02d}")
        else:
            session.browse(rng.randint(1, 3))
            if plan.signup_session is not None and rng.random() < 0.25:
                products = session.shop(rng.randint(1, 2))
                if rng.random() < 0.35:
                    session.checkout(products)  # abandoned
    if plan.signup_session is not None:
        _emails(writer, rng, plan.session_starts[plan.signup_session], now, campaigns)
    return writer.calls


def _device_for(
    devices: tuple[str, ...], number: int, rng: random.Random, *, two_device_plan: bool
) -> str:
    if not two_device_plan:
        return devices[0]
    # Anonymous on A, anonymous on B, sign-up on A, log in on B; then either.
    if number < 4:
        return devices[number % 2]
    return rng.choice(devices)


class _Session:
    """One visit to the shop on one device."""

    def __init__(
        self,
        writer: _Writer,
        rng: random.Random,
        at: datetime,
        device: str,
        agent: str,
        *,
        signed_in: bool,
    ) -> None:
        self.writer = writer
        self.rng = rng
        self.at = at
        self.device = device
        self.context = {"userAgent": agent, "locale": "en-GB"}
        self.signed_in = signed_in
        self.referrer = rng.choice(
            ("https://www.google.example/", "", "https://social.example/", "")
        )

    def _tick(self) -> datetime:
        self.at += timedelta(seconds=self.rng.uniform(8, 120))
        return self.at

    def page(self, name: str, path: str, *, category: str | None = None) -> None:
        data: dict[str, Any] = {"path": path, "url": SHOP + path, "title": f"{name} | Kindred Shop"}
        if self.referrer:
            data["referrer"] = self.referrer
            self.referrer = ""
        if category:
            data["category"] = category
        self._call(CallType.PAGE, name, data)

    def track(self, event: str, data: Mapping[str, Any]) -> None:
        self._call(CallType.TRACK, event, data)

    def identify(self, traits: Mapping[str, Any]) -> None:
        self.signed_in = True
        self._call(CallType.IDENTIFY, None, traits)

    def _call(self, type_: CallType, name: str | None, data: Mapping[str, Any]) -> None:
        self.writer.add(
            type_,
            self._tick(),
            name=name,
            data=data,
            anonymous_id=self.device,
            signed_in=self.signed_in,
            context=self.context,
        )

    def browse(self, products: int) -> None:
        """Lands on the home or a category page and looks at a few products."""
        category = self.rng.choice(CATEGORIES)
        if self.rng.random() < 0.5:
            self.page("Home", "/")
        self.page(category, f"/collections/{category.lower()}", category=category)
        for product in self.rng.sample(CATALOGUE, products):
            self.view(product)

    def view(self, product: Product) -> None:
        """Opens a product page (tracked as `Product Viewed` alone, as many shops do)."""
        url = f"{SHOP}/products/{product.sku.lower()}"
        self.track("Product Viewed", product.properties() | {"url": url})

    def shop(self, items: int) -> list[dict[str, Any]]:
        """Views products and adds them to the cart; returns the cart's lines."""
        lines = []
        for product in self.rng.sample(CATALOGUE, items):
            self.view(product)
            quantity = 1 if self.rng.random() < 0.85 else 2
            line = product.properties(quantity)
            self.track("Product Added", line)
            lines.append(line)
        return lines

    def checkout(self, lines: list[dict[str, Any]]) -> None:
        """Opens the cart and starts checking out."""
        self.page("Cart", "/cart")
        self.track(
            "Checkout Started",
            {"value": _total(lines), "currency": CURRENCY, "products": lines},
        )

    def order(self, lines: list[dict[str, Any]], *, order_id: str) -> None:
        """Completes an order of the cart's lines."""
        subtotal = _total(lines)
        shipping = 0.0 if subtotal >= 50 else 3.95
        self.page("Checkout", "/checkout")
        self.track(
            "Order Completed",
            {
                "order_id": order_id,
                "revenue": subtotal,
                "shipping": shipping,
                "total": round(subtotal + shipping, 2),
                "currency": CURRENCY,
                "products": lines,
            },
        )
        self.page("Order Confirmation", "/checkout/thanks")


def _total(lines: Iterable[Mapping[str, Any]]) -> float:
    return round(float(sum(line["price"] * line["quantity"] for line in lines)), 2)


def _emails(
    writer: _Writer,
    rng: random.Random,
    subscribed_at: datetime,
    now: datetime,
    campaigns: Iterable[_Campaign],
) -> None:
    if rng.random() < 0.2:
        return  # never subscribed to marketing email
    engaged = writer.person.persona is Persona.LOYAL or rng.random() < 0.25
    open_rate = rng.uniform(0.45, 0.8) if engaged else rng.uniform(0.05, 0.3)
    context = {"integration": {"name": "kindred-demo-esp"}}
    for campaign in campaigns:
        if campaign.sent_at <= subscribed_at or rng.random() >= open_rate:
            continue
        opened = campaign.sent_at + timedelta(minutes=rng.uniform(2, 2 * 24 * 60))
        if opened >= now:
            continue
        data = {
            "campaign_id": campaign.id,
            "campaign_name": campaign.name,
            "email_subject": campaign.name,
        }
        writer.add(
            CallType.TRACK,
            opened,
            name="Email Opened",
            data=data,
            anonymous_id=None,
            signed_in=True,
            context=context,
        )
        clicked = opened + timedelta(seconds=rng.uniform(5, 300))
        if rng.random() < 0.3 and clicked < now:
            writer.add(
                CallType.TRACK,
                clicked,
                name="Email Link Clicked",
                data=data | {"link_url": SHOP + campaign.path},
                anonymous_id=None,
                signed_in=True,
                context=context,
            )


# --- sending through the public API -----------------------------------------------------


class DemoError(Exception):
    """The demo could not be delivered; the message says why."""


@dataclass(frozen=True)
class Sent:
    """What sending a demo did."""

    events: int
    failed: int
    seconds: float


def server_url(settings: Settings) -> str:
    """Returns the URL the configured `kindred serve` answers on, from this machine."""
    host = settings.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def is_ready(url: str) -> bool:
    """Tells whether a Kindred at `url` answers /readyz with 200."""
    try:
        return httpx.get(f"{url.rstrip('/')}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _enqueue(client: Any, call: Call) -> bool:
    # The SDK writes into the context it is given, so it gets a copy.
    common: dict[str, Any] = {
        "anonymous_id": call.anonymous_id,
        "timestamp": call.timestamp,
        "message_id": call.message_id,
        "context": dict(call.context),
    }
    if call.type is CallType.IDENTIFY:
        queued, _ = client.identify(call.user_id, dict(call.data), **common)
    elif call.type is CallType.TRACK:
        queued, _ = client.track(call.user_id, call.name, dict(call.data), **common)
    else:
        queued, _ = client.page(call.user_id, name=call.name, properties=dict(call.data), **common)
    return bool(queued)


def send(
    calls: Iterable[Call],
    *,
    url: str,
    write_key: str,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    batch_size: int = BATCH_SIZE,
) -> Sent:
    """Sends calls with the Segment SDK, in /v1/batch requests of up to `batch_size` events.

    Blocks until the server acknowledged every batch; `progress` receives the
    number of events handed over so far. Raises DemoError if the server refused
    a batch; stops early, without error, when `stop` is set.
    """
    failures: list[tuple[Exception, int]] = []

    def on_error(exc: Exception, batch: list[Any]) -> None:
        failures.append((exc, len(batch)))

    client = Client(
        write_key,
        host=url,
        upload_size=batch_size,
        upload_interval=0.25,
        max_queue_size=4 * batch_size,
        max_retries=4,
        timeout=60,
        on_error=on_error,
    )
    started = time.monotonic()
    queued = 0
    stopped = False
    try:
        for call in calls:
            while client.queue.full() and not failures and not (stop and stop.is_set()):
                # The consumer thread is still uploading earlier batches.
                time.sleep(0.005)
            if failures or (stop is not None and stop.is_set()):
                stopped = True
                break
            if not _enqueue(client, call):
                raise DemoError("the Segment client's queue refused an event")
            queued += 1
            if progress is not None and queued % 100 == 0:
                progress(max(0, queued - client.queue.qsize()))
        if not stopped:
            client.flush()
    finally:
        client.join()
    failed = sum(count for _, count in failures)
    unsent = client.queue.qsize()
    if failures:
        raise DemoError(f"the server refused the demo events: {failures[0][0]}")
    sent = queued - failed - unsent
    if progress is not None:
        progress(sent)
    return Sent(events=sent, failed=failed, seconds=time.monotonic() - started)


async def create_source(db: AsyncDatabase[Document]) -> tuple[str, str]:
    """Creates a source for the demo (`demo`, else `demo-2`, …) and returns its name and key."""
    store = SourceStore(db)
    for number in range(1, 1000):
        name = DEMO_SOURCE if number == 1 else f"{DEMO_SOURCE}-{number}"
        try:
            _, write_key = await store.create(name)
        except SourceExists:
            continue
        return name, write_key
    raise DemoError("every demo source name up to demo-999 is taken")


# --- first start: `kindred serve --demo` ------------------------------------------------


class FirstStartLoader:
    """Loads the demo in a thread of its own once the server is ready, unless loaded before.

    The `demo` source marks a database that has had the demo: creating it is the
    check, so two servers starting together load it once, and a restart never
    loads it again, nor finishes a load that was interrupted (`kindred demo` sends it anew).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        people: int = DEFAULT_PEOPLE,
        days: int = DEFAULT_DAYS,
        seed: int = DEFAULT_SEED,
        ready_timeout: float = 120,
        apply_timeout: float = 900,
    ) -> None:
        if settings.mongodb_uri is None:
            raise ValueError("the first-start loader needs settings.mongodb_uri")
        self.uri = settings.mongodb_uri
        self.database = settings.database
        self.url = server_url(settings)
        self.people, self.days, self.seed = people, days, seed
        self.ready_timeout = ready_timeout
        self.apply_timeout = apply_timeout
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kindred-demo", daemon=True)

    def start(self) -> None:
        """Starts the loader's thread; it returns at once."""
        self.thread.start()

    def stop(self, timeout: float = 15) -> None:
        """Stops sending (what was sent stays) and waits a bounded time for the thread."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _run(self) -> None:
        try:
            self._load()
        except Exception:
            if self.stopping.is_set():
                # The server stopped under the sender: expected on Ctrl-C, not an error.
                log.info("demo data: stopped with the server before the end")
                return
            # The server keeps serving: a demo that failed to load is only a log line.
            log.exception("demo data: loading failed; `kindred demo` loads it by hand")

    def _load(self) -> None:
        if not self._wait_until_ready():
            return
        write_key = asyncio.run(self._claim_source())
        if write_key is None:
            log.info("demo data: a `demo` source exists, so the demo was loaded before; skipping")
            return
        # Before the events: memberships then build up in real time as they are applied.
        asyncio.run(self._install_segments())
        demo = generate(seed=self.seed, people=self.people, days=self.days, now=datetime.now(UTC))
        total = len(demo.calls)
        log.info(
            "demo data: loading demo people through the ingest API",
            extra={"people": len(demo.people), "events": total, "days": self.days},
        )
        tenth = max(1, total // 10)
        next_report = [tenth]

        def report(done: int) -> None:
            if done >= next_report[0] and done < total:
                log.info("demo data: sending", extra={"sent": done, "events": total})
                next_report[0] = (done // tenth + 1) * tenth

        sent = send(
            demo.calls, url=self.url, write_key=write_key, progress=report, stop=self.stopping
        )
        if self.stopping.is_set():
            log.info("demo data: stopped before the end", extra={"sent": sent.events})
            return
        log.info(
            "demo data: sent; the profile builder is applying them",
            extra={"events": sent.events, "seconds": round(sent.seconds, 1)},
        )
        applied_in = asyncio.run(self._wait_until_applied())
        if applied_in is not None:
            log.info(
                "demo data: loaded; profiles are ready to browse",
                extra={"people": len(demo.people), "seconds": round(applied_in, 1)},
            )

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + self.ready_timeout
        while not self.stopping.is_set():
            if is_ready(self.url):
                return True
            if time.monotonic() > deadline:
                log.warning("demo data: the server never became ready; not loading the demo")
                return False
            self.stopping.wait(0.25)
        return False

    async def _claim_source(self) -> str | None:
        client = create_client(self.uri)
        try:
            _, write_key = await SourceStore(client[self.database]).create(DEMO_SOURCE)
        except SourceExists:
            return None
        finally:
            await client.close()
        return write_key

    async def _install_segments(self) -> None:
        client = create_client(self.uri)
        try:
            db = client[self.database]
            segments = SegmentService(client, SegmentStore(db), sink=WebhookService.on(db))
            rows = await segments.install_templates(now=datetime.now(UTC), actor="demo")
            log.info("demo data: segment templates installed", extra={"segments": len(rows)})
        finally:
            await client.close()

    async def _wait_until_applied(self) -> float | None:
        # Seconds until no event is pending, or None on stop or timeout.
        started = time.monotonic()
        client = create_client(self.uri)
        try:
            events = EventLog(client[self.database])
            last_report = started
            while not self.stopping.is_set():
                try:
                    pending = await events.pending_count()
                except PyMongoError as exc:
                    log.warning(
                        "demo data: could not count pending events", extra={"error": str(exc)}
                    )
                    return None
                if pending == 0:
                    return time.monotonic() - started
                if time.monotonic() - started > self.apply_timeout:
                    return None
                if time.monotonic() - last_report >= 10:
                    log.info("demo data: applying", extra={"pending": pending})
                    last_report = time.monotonic()
                await asyncio.sleep(1)
            return None
        finally:
            await client.close()
