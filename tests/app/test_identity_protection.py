"""Identity protection through real events: flags, blocked values, limits, shared devices."""

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.eventlog import EVENTS
from identity.events import IdentityRules
from identity.graph import Limits
from identity.store import IDENTITIES
from profiles.store import PROFILES
from tests.fixtures.events import builder_for, drain, event

Db = AsyncDatabase[dict[str, Any]]


async def _live(db: Db) -> list[dict[str, Any]]:
    return [doc async for doc in db[PROFILES].find({"merged_into": None}).sort("_id")]


def _value(profile: dict[str, Any], trait: str) -> Any:
    return profile["traits"][trait]["value"]


async def test_an_invalid_email_is_kept_flagged_and_links_nothing(db: Db) -> None:
    await db[EVENTS].insert_many(
        [
            event("identify", anonymous_id="a1", traits={"email": "ada(at)example.com"}),
            event("identify", anonymous_id="a2", traits={"email": "ada(at)example.com"}, at=1),
        ]
    )
    await drain(builder_for(db))
    profiles = await _live(db)
    assert len(profiles) == 2  # the same invalid address did not merge them
    for profile in profiles:
        assert _value(profile, "email") == "ada(at)example.com"
        assert _value(profile, "email_status") == "invalid"
        assert _value(profile, "email_status_reason") == "missing_at"
    assert await db[IDENTITIES].count_documents({"kind": "email"}) == 0


async def test_a_valid_email_and_phone_are_flagged_valid(db: Db) -> None:
    traits = {"email": "Ada@Example.com", "phone": "+1 415 555 0100"}
    await db[EVENTS].insert_one(event("identify", user_id="u1", traits=traits))
    await drain(builder_for(db))
    [profile] = await _live(db)
    assert _value(profile, "email_status") == "valid"
    assert _value(profile, "phone_status") == "valid"
    assert _value(profile, "email_status_reason") is None


async def test_blocked_values_never_link_two_people(db: Db) -> None:
    await db[EVENTS].insert_many(
        [
            event("identify", user_id="u1", traits={"email": "test@test.com"}),
            event("identify", user_id="u2", traits={"email": "TEST@test.com"}, at=1),
            event("track", user_id="u3", anonymous_id="undefined", event="Viewed", at=2),
            event("track", user_id="u4", anonymous_id="undefined", event="Viewed", at=3),
        ]
    )
    await drain(builder_for(db))
    profiles = await _live(db)
    assert len(profiles) == 4
    assert {_value(p, "email_status") for p in profiles if "email" in p["traits"]} == {"blocked"}
    assert await db[IDENTITIES].count_documents({"kind": {"$in": ["email", "anonymous_id"]}}) == 0


async def test_an_event_with_only_blocked_identifiers_is_applied_to_nobody(db: Db) -> None:
    await db[EVENTS].insert_one(event("track", anonymous_id="null", event="Viewed"))
    builder = builder_for(db)
    result = await builder.run_batch()
    assert (result.applied, result.unattributed) == (1, 1)
    assert await _live(db) == []
    stored = await db[EVENTS].find_one({})
    assert stored is not None
    assert stored["status"] == "applied"
    assert stored["profile_id"] is None


async def test_a_profile_links_at_most_its_limit_of_emails(db: Db) -> None:
    emails = [f"ada{n}@example.com" for n in range(4)]
    await db[EVENTS].insert_many(
        [event("identify", user_id="u1", traits={"email": e}, at=n) for n, e in enumerate(emails)]
        + [event("identify", user_id="u2", traits={"email": emails[3]}, at=9)]
    )
    rules = IdentityRules(limits=Limits(per_kind={"user_id": 1, "email": 3, "phone": 3}))
    await drain(builder_for(db, rules=rules))
    u1 = await db[IDENTITIES].find_one({"_id": "user_id:u1"})
    assert u1 is not None
    linked = await db[IDENTITIES].count_documents({"profile_id": u1["profile_id"], "kind": "email"})
    assert linked == 3
    # The fourth address was left free, so the person it belongs to gets it.
    owner = await db[IDENTITIES].find_one({"_id": f"email:{emails[3]}"})
    u2 = await db[IDENTITIES].find_one({"_id": "user_id:u2"})
    assert owner is not None
    assert u2 is not None
    assert owner["profile_id"] == u2["profile_id"]


async def test_a_device_seen_with_too_many_people_stops_linking(db: Db) -> None:
    # A shop's kiosk: four customers log in on it, then someone browses anonymously.
    logins = [
        event(
            "identify", user_id=f"u{n}", anonymous_id="kiosk", traits={"first_name": f"P{n}"}, at=n
        )
        for n in range(4)
    ]
    browsing = event("page", anonymous_id="kiosk", name="Home", at=10)
    await db[EVENTS].insert_many([*logins, browsing])
    rules = IdentityRules(limits=Limits(shared_after=3))
    await drain(builder_for(db, rules=rules))

    kiosk = await db[IDENTITIES].find_one({"_id": "anonymous_id:kiosk"})
    assert kiosk is not None
    assert kiosk["shared"] is True
    first = await db[IDENTITIES].find_one({"_id": "user_id:u0"})
    assert first is not None
    assert kiosk["held_by"] == first["profile_id"]
    # Each customer has a profile of their own, and the later browsing went to the
    # kiosk's device profile, not to the first customer.
    people = {doc["profile_id"] async for doc in db[IDENTITIES].find({"kind": "user_id"})}
    assert len(people) == 4
    stored = await db[EVENTS].find_one({"_id": browsing["_id"]})
    assert stored is not None
    assert stored["profile_id"] == kiosk["profile_id"]
    assert stored["profile_id"] not in people


async def test_provider_folded_emails_link_only_when_turned_on(db: Db) -> None:
    events = [
        event("identify", anonymous_id="a1", traits={"email": "J.Smith+shop@gmail.com"}),
        event("identify", anonymous_id="a2", traits={"email": "jsmith@googlemail.com"}, at=1),
    ]
    await db[EVENTS].insert_many([dict(e) for e in events])
    await drain(builder_for(db))
    assert len(await _live(db)) == 2  # by default an address links only as written

    await db[EVENTS].delete_many({})
    await db[PROFILES].delete_many({})
    await db[IDENTITIES].delete_many({})
    await db[EVENTS].insert_many([dict(e) for e in events])
    await drain(builder_for(db, rules=IdentityRules(canonical_emails=True)))
    [profile] = await _live(db)
    kinds = {i["kind"] for i in profile["identifiers"]}
    assert kinds == {"anonymous_id", "email", "email_canonical"}
    assert _value(profile, "email") == "jsmith@googlemail.com"  # the address as observed
