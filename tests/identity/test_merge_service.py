"""Merging and unmerging against the real database: nothing lost, exactly undone."""

import asyncio
import os
import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.eventlog import EVENTS, EventLog
from identity.merge import Actor, MergeStatus, Rule
from identity.service import AuditAction, MergeRefused, MergeService
from identity.store import IDENTITIES, MERGES, Proposal, SuggestionStatus, SuggestionStore
from profiles.service import ProfileService
from profiles.store import PROFILES, TRAIT_HISTORY, ProfileStore
from tests.fixtures.events import builder_for, drain, event

Db = AsyncDatabase[dict[str, Any]]
ADMIN = Actor.admin("key_test", "test-admin")


def merges_on(db: Db) -> MergeService:
    """Returns the merge service on the test database."""
    profiles = ProfileService(ProfileStore(db))
    return MergeService.on(db, profiles=profiles, events=EventLog(db))


async def owner(db: Db, key: str) -> str:
    doc = await db[IDENTITIES].find_one({"_id": key})
    assert doc is not None, key
    return str(doc["profile_id"])


async def snapshot(db: Db, pid: str) -> dict[str, Any]:
    """Returns everything a user could notice of one profile, bookkeeping aside."""
    doc = await db[PROFILES].find_one({"_id": pid})
    assert doc is not None
    return {
        "merged_into": doc.get("merged_into"),
        "traits": doc["traits"],
        "stats": doc["stats"],
        "segments": sorted(doc.get("segments", [])),
        "identifiers": sorted((i["kind"], i["value"]) for i in doc["identifiers"]),
        "keys": sorted([d["_id"] async for d in db[IDENTITIES].find({"profile_id": pid})]),
        "observations": sorted(
            [
                (d["key"], repr(d["value"]), d["observed_at"], d["source"], d["origin"])
                async for d in db[TRAIT_HISTORY].find({"profile_id": pid})
            ]
        ),
        "events": sorted([d["message_id"] async for d in db[EVENTS].find({"profile_id": pid})]),
    }


async def two_people(db: Db) -> tuple[str, str]:
    """Creates Ada (older, anonymous with an email) and Ada again (a user id); returns both."""
    await db[EVENTS].insert_many(
        [
            event("identify", anonymous_id="a1", traits={"email": "ada@x.io", "name": "Ada"}, at=0),
            event("page", anonymous_id="a1", name="Home", at=1),
            event(
                "track",
                anonymous_id="a1",
                event="Order Completed",
                properties={"revenue": 10},
                at=2,
            ),
            event(
                "identify",
                user_id="u1",
                traits={"email": "ada@work.io", "name": "Ada L", "plan": "pro"},
                source="crm",
                at=5,
            ),
            event("track", user_id="u1", event="Order Completed", properties={"revenue": 5}, at=6),
        ]
    )
    await drain(builder_for(db))
    return await owner(db, "email:ada@x.io"), await owner(db, "user_id:u1")


async def test_merge_keeps_every_identity_observation_and_event(db: Db) -> None:
    older, with_user = await two_people(db)
    before = {pid: await snapshot(db, pid) for pid in (older, with_user)}
    await db[PROFILES].update_one({"_id": older}, {"$set": {"segments": ["newsletter"]}})

    record = await merges_on(db).merge_pair(older, with_user, actor=ADMIN, reason="same Ada")

    # The profile holding a user id survives, though the other is older.
    assert (record.survivor, record.merged) == (with_user, older)
    after = await snapshot(db, with_user)
    for part in ("keys", "observations", "events"):
        assert after[part] == sorted(before[older][part] + before[with_user][part]), part
    assert set(after["identifiers"]) == set(before[older]["identifiers"]) | set(
        before[with_user]["identifiers"]
    )
    assert after["segments"] == ["newsletter"]
    # Traits come from the combined history: the newest `name` wins, nothing is lost.
    assert after["traits"]["name"]["value"] == "Ada L"
    assert after["traits"]["email"]["value"] == "ada@work.io"
    assert after["traits"]["plan"]["value"] == "pro"
    # Stats are recounted from the events, not added up.
    assert after["stats"]["event_count"] == 5
    assert after["stats"]["orders"] == 2
    assert after["stats"]["revenue_cents"] == 1500
    assert after["stats"]["first_seen"] == before[older]["stats"]["first_seen"]
    tombstone = await snapshot(db, older)
    assert tombstone["merged_into"] == with_user
    assert (tombstone["keys"], tombstone["observations"], tombstone["events"]) == ([], [], [])
    ledger = await db[MERGES].find_one({"_id": record.id})
    assert ledger is not None
    assert ledger["actor"] == {"kind": "admin", "key_id": "key_test", "key_name": "test-admin"}
    assert ledger["reason"] == "same Ada"
    assert ledger["moved"] == {
        "identities": len(before[older]["keys"]),
        "observations": len(before[older]["observations"]),
        "events": 3,
    }


async def test_merge_then_unmerge_restores_both_profiles(db: Db) -> None:
    older, with_user = await two_people(db)
    await db[PROFILES].update_one({"_id": older}, {"$set": {"segments": ["newsletter"]}})
    await db[PROFILES].update_one({"_id": with_user}, {"$set": {"segments": ["vip"]}})
    before = {pid: await snapshot(db, pid) for pid in (older, with_user)}
    merges = merges_on(db)

    record = await merges.merge(
        survivor_id=older, merged_id=with_user, actor=ADMIN, reason="chosen by hand"
    )
    undone = await merges.unmerge(record.id, actor=ADMIN, reason="two people after all")

    assert undone.status is MergeStatus.UNDONE
    assert undone.undo_reason == "two people after all"
    assert undone.given_back == record.moved
    for pid in (older, with_user):
        assert await snapshot(db, pid) == before[pid]


async def test_events_after_a_merge_go_back_to_the_side_their_identifiers_point_to(
    db: Db,
) -> None:
    older, with_user = await two_people(db)
    merges = merges_on(db)
    record = await merges.merge_pair(older, with_user, actor=ADMIN, reason="same Ada")
    await db[EVENTS].insert_many(
        [
            # Ada of the first profile, now on a new device too.
            event(
                "identify", anonymous_id="a2", traits={"email": "ada@x.io", "city": "Oslo"}, at=8
            ),
            event("page", anonymous_id="a2", name="Cart", at=9),
            event("track", user_id="u1", event="Signed In", at=9),
        ]
    )
    await drain(builder_for(db))
    assert (await snapshot(db, with_user))["stats"]["event_count"] == 8

    await merges.unmerge(record.id, actor=ADMIN, reason="not her")

    first, second = await snapshot(db, older), await snapshot(db, with_user)
    assert first["merged_into"] is None
    assert first["stats"]["event_count"] == 5
    assert first["traits"]["city"]["value"] == "Oslo"
    assert "anonymous_id:a2" in first["keys"]
    assert ("anonymous_id", "a2") in first["identifiers"]
    assert second["stats"]["event_count"] == 3
    assert "city" not in second["traits"]
    assert not {"email:ada@x.io", "anonymous_id:a2"} & set(second["keys"])


async def test_an_unmerged_pair_is_never_merged_again_automatically(db: Db) -> None:
    older, with_user = await two_people(db)
    merges = merges_on(db)
    record = await merges.merge_pair(older, with_user, actor=ADMIN, reason="same Ada")
    await merges.unmerge(record.id, actor=ADMIN, reason="two people")

    # An event carrying both profiles' identifiers would merge them; not any more.
    await db[EVENTS].insert_one(
        event("identify", user_id="u1", traits={"email": "ada@x.io"}, at=10)
    )
    await drain(builder_for(db))
    assert (await snapshot(db, older))["merged_into"] is None
    assert (await snapshot(db, with_user))["merged_into"] is None
    with pytest.raises(MergeRefused) as refused:
        await merges.merge_pair(older, with_user, actor=Actor.automatic("test"), reason="")
    assert refused.value.rule is Rule.NOT_SAME_PERSON
    # An admin may still say they are one person.
    again = await merges.merge_pair(older, with_user, actor=ADMIN, reason="they are, really")
    assert again.status is MergeStatus.DONE


async def test_not_the_same_person_holds_through_later_merges(db: Db) -> None:
    older, with_user = await two_people(db)
    merges = merges_on(db)
    await SuggestionStore(db).record(
        [Proposal(older, with_user, 0.95, ())], source="dedupe", now=event("page")["timestamp"]
    )
    [suggestion] = (
        await SuggestionStore(db).page(status=SuggestionStatus.OPEN, min_score=0, first=5)
    )[0]
    await merges.reject_suggestion(suggestion.id, actor=ADMIN, reason="different people")
    await db[EVENTS].insert_one(event("identify", user_id="u9", traits={"email": "z@x.io"}, at=1))
    await drain(builder_for(db))
    third = await owner(db, "user_id:u9")
    # `older` merges into a third profile; that one is now apart from `with_user` too.
    await merges.merge(survivor_id=third, merged_id=older, actor=ADMIN, reason="same")
    with pytest.raises(MergeRefused) as refused:
        await merges.merge_pair(third, with_user, actor=Actor.automatic("test"), reason="")
    assert refused.value.rule in {Rule.NOT_SAME_PERSON, Rule.DIFFERENT_USER_IDS}
    with pytest.raises(MergeRefused) as again:
        await merges.reject_suggestion(suggestion.id, actor=ADMIN, reason="twice")
    assert again.value.rule is Rule.SUGGESTION_CLOSED


async def test_refusals_name_their_rule_and_are_audited(db: Db) -> None:
    older, with_user = await two_people(db)
    await db[EVENTS].insert_one(event("identify", user_id="u2", traits={"name": "Bob"}, at=1))
    await drain(builder_for(db))
    bob = await owner(db, "user_id:u2")
    merges = merges_on(db)
    cases = [
        ((older, older), Rule.SAME_PROFILE),
        ((older, "prf_missing"), Rule.PROFILE_NOT_FOUND),
        ((with_user, bob), Rule.DIFFERENT_USER_IDS),
    ]
    for (survivor, merged), rule in cases:
        with pytest.raises(MergeRefused) as refused:
            await merges.merge(survivor_id=survivor, merged_id=merged, actor=ADMIN, reason="r")
        assert refused.value.rule is rule
    await merges.merge(survivor_id=with_user, merged_id=older, actor=ADMIN, reason="same")
    with pytest.raises(MergeRefused) as tombstone:
        await merges.merge(survivor_id=bob, merged_id=older, actor=ADMIN, reason="r")
    assert tombstone.value.rule is Rule.ALREADY_MERGED
    assert with_user in tombstone.value.message
    with pytest.raises(ValueError, match="reason"):
        await merges.merge(survivor_id=bob, merged_id=with_user, actor=ADMIN, reason="  ")

    entries, more = await merges.audit(first=10)
    assert not more
    assert [e.outcome for e in entries] == [
        "refused:already_merged",
        "done",
        "refused:different_user_ids",
        "refused:profile_not_found",
        "refused:same_profile",
    ]
    assert all(e.action is AuditAction.MERGE and e.actor == ADMIN for e in entries)
    page, more = await merges.audit(first=2, after=entries[1].id)
    assert [e.id for e in page] == [entries[2].id, entries[3].id]
    assert more


async def test_merging_again_is_idempotent(db: Db) -> None:
    older, with_user = await two_people(db)
    merges = merges_on(db)
    first = await merges.merge(survivor_id=with_user, merged_id=older, actor=ADMIN, reason="r")
    state = await snapshot(db, with_user)
    second = await merges.merge(survivor_id=with_user, merged_id=older, actor=ADMIN, reason="r")
    assert second.id == first.id
    assert await snapshot(db, with_user) == state
    assert await db[MERGES].count_documents({}) == 1


async def test_unmerging_inside_a_chain_gives_back_from_the_live_end(db: Db) -> None:
    older, with_user = await two_people(db)
    await db[EVENTS].insert_one(
        event("identify", anonymous_id="c1", traits={"email": "c@x.io", "name": "C"}, at=7)
    )
    await drain(builder_for(db))
    third = await owner(db, "email:c@x.io")
    before = {pid: await snapshot(db, pid) for pid in (older, with_user, third)}
    merges = merges_on(db)
    first = await merges.merge(survivor_id=older, merged_id=third, actor=ADMIN, reason="r")
    await merges.merge(survivor_id=with_user, merged_id=older, actor=ADMIN, reason="r")
    assert (await ProfileService(ProfileStore(db)).get(third)).id == with_user

    await merges.unmerge(first.id, actor=ADMIN, reason="C is someone else")

    assert await snapshot(db, third) == before[third]
    rest = await snapshot(db, with_user)
    assert rest["events"] == sorted(before[older]["events"] + before[with_user]["events"])
    assert (await snapshot(db, older))["merged_into"] == with_user
    with pytest.raises(MergeRefused) as twice:
        await merges.unmerge(first.id, actor=ADMIN, reason="again")
    assert twice.value.rule is Rule.ALREADY_UNDONE
    assert [m.id for m in await merges.merges_of(third)] == [first.id]


async def test_concurrent_merges_touching_one_profile_do_not_corrupt_it(db: Db) -> None:
    await db[EVENTS].insert_many(
        [
            event("identify", anonymous_id=f"a{n}", traits={"email": f"p{n}@x.io"}, at=n)
            for n in range(6)
        ]
        + [event("page", anonymous_id=f"a{n}", name="Home", at=n + 0.5) for n in range(6)]
    )
    await drain(builder_for(db))
    ids = [await owner(db, f"email:p{n}@x.io") for n in range(6)]
    merges = merges_on(db)
    hub = ids[0]
    attempts = [
        (hub, ids[1]),
        (hub, ids[2]),
        (ids[3], hub),
        (ids[2], ids[4]),
        (ids[4], ids[5]),
        (ids[5], hub),
        (hub, ids[1]),
    ]
    results = await asyncio.gather(
        *(
            merges.merge(survivor_id=s, merged_id=m, actor=ADMIN, reason="at once")
            for s, m in attempts
        ),
        return_exceptions=True,
    )
    assert all(isinstance(r, MergeRefused) or r.status is MergeStatus.DONE for r in results)

    live = [d async for d in db[PROFILES].find({"merged_into": None})]
    live_ids = {d["_id"] for d in live}
    # Every identity and event belongs to a live profile; nothing is lost or doubled.
    assert {d["profile_id"] async for d in db[IDENTITIES].find({})} <= live_ids
    assert await db[IDENTITIES].count_documents({}) == 12
    assert {d["profile_id"] async for d in db[EVENTS].find({})} <= live_ids
    assert sum(d["stats"]["event_count"] for d in live) == 12
    for doc in live:
        assert doc["stats"]["event_count"] == await db[EVENTS].count_documents(
            {"profile_id": doc["_id"]}
        )
    # Each tombstone leads to a live profile; each standing merge matches its tombstone.
    tombstones = {
        d["_id"]: d["merged_into"] async for d in db[PROFILES].find({"merged_into": {"$ne": None}})
    }
    for pid in tombstones:
        seen, current = set(), pid
        while current in tombstones:
            assert current not in seen
            seen.add(current)
            current = tombstones[current]
        assert current in live_ids
    standing = [d async for d in db[MERGES].find({"status": "done"})]
    assert {d["merged"]: d["survivor"] for d in standing} == tombstones


# --- merge then unmerge restores both profiles, for random histories --------------------

NAMES = st.sampled_from(["Ada", "Ada L", "Ada Lovelace", "Grace"])
CITIES = st.sampled_from(["Oslo", "Paris", None])


@st.composite
def side_events(draw: st.DrawFn, side: str, start: float, count: int) -> list[dict[str, Any]]:
    """Random events of one person: identifies, pages and orders from two sources."""
    keys = {"anonymous_id": "ax"} if side == "x" else {"user_id": "uy"}
    found = []
    for n in range(count):
        at = start + draw(st.floats(min_value=0, max_value=50)) + n * 0.01
        kind = draw(st.sampled_from(["identify", "page", "order", "new_device"]))
        source = draw(st.sampled_from(["web", "crm"]))
        if kind == "identify":
            traits = {"email": f"{side}@x.io", "name": draw(NAMES)}
            city = draw(CITIES)
            if city is not None:
                traits["city"] = city
            found.append(event("identify", **keys, traits=traits, source=source, at=at))
        elif kind == "page":
            found.append(event("page", **keys, name="Home", at=at))
        elif kind == "order":
            revenue = draw(st.integers(min_value=1, max_value=99))
            found.append(
                event(
                    "track", **keys, event="Order Completed", properties={"revenue": revenue}, at=at
                )
            )
        else:
            device = f"{side}-d{n}"
            found.append(
                event("identify", anonymous_id=device, traits={"email": f"{side}@x.io"}, at=at)
            )
            found.append(event("page", anonymous_id=device, name="Cart", at=at + 0.1))
    return found


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    """Two people's events before and after a merge, and which way it goes."""
    # Both sides exist before the merge: each person's first event names them.
    anchors = [
        event("identify", anonymous_id="ax", traits={"email": "x@x.io"}, at=-1),
        event("identify", user_id="uy", traits={"email": "y@x.io"}, at=-1),
    ]
    return {
        "before": anchors
        + draw(side_events("x", 0, draw(st.integers(1, 4))))
        + draw(side_events("y", 0, draw(st.integers(1, 4)))),
        "after": draw(side_events("x", 100, draw(st.integers(0, 3))))
        + draw(side_events("y", 100, draw(st.integers(0, 3)))),
        "x_survives": draw(st.booleans()),
    }


def _difference(actual: Any, expected: Any) -> Any:
    # Lists show only what one side has and the other lacks, so a failure reads quickly.
    if isinstance(actual, list) and isinstance(expected, list):
        extra = [a for a in actual if a not in expected]
        missing = [e for e in expected if e not in actual]
        return {"extra": extra, "missing": missing, "lengths": (len(actual), len(expected))}
    return {"actual": actual, "expected": expected}


async def _fresh(client: AsyncMongoClient[dict[str, Any]]) -> Db:
    return client[f"kindred_prop_{uuid.uuid4().hex[:10]}"]


async def _play(
    db: Db, before: list[dict[str, Any]], after: list[dict[str, Any]], merge: Any
) -> dict[str, Any]:
    await db[EVENTS].insert_many([dict(e) for e in before])
    await drain(builder_for(db))
    x, y = await owner(db, "email:x@x.io"), await owner(db, "email:y@x.io")
    await db[PROFILES].update_one({"_id": x}, {"$set": {"segments": ["sx"]}})
    await db[PROFILES].update_one({"_id": y}, {"$set": {"segments": ["sy"]}})
    record = await merge(db, x, y)
    if after:
        await db[EVENTS].insert_many([dict(e) for e in after])
        await drain(builder_for(db))
    if record is not None:
        await merges_on(db).unmerge(record.id, actor=ADMIN, reason="undo")
    shots = {name: await snapshot(db, pid) for name, pid in (("x", x), ("y", y))}
    for shot in shots.values():
        # Rows of late events are keyed by the profile that first took them: compare facts.
        shot["observations"] = sorted(shot["observations"])
    return shots


@settings(
    max_examples=int(os.environ.get("KINDRED_PROPERTY_EXAMPLES", "25")),
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
def test_merge_then_unmerge_restores_both_profiles_for_random_histories(
    mongodb_uri: str, history: dict[str, Any]
) -> None:
    async def run() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
        control, merged = await _fresh(client), await _fresh(client)
        try:

            async def no_merge(db: Db, x: str, y: str) -> None:
                return None

            async def merge(db: Db, x: str, y: str) -> Any:
                survivor, gone = (x, y) if history["x_survives"] else (y, x)
                return await merges_on(db).merge(
                    survivor_id=survivor, merged_id=gone, actor=ADMIN, reason="test"
                )

            expected = await _play(control, history["before"], history["after"], no_merge)
            actual = await _play(merged, history["before"], history["after"], merge)
            diff = {
                (side, part): _difference(actual[side][part], expected[side][part])
                for side in expected
                for part in expected[side]
                if actual[side][part] != expected[side][part]
            }
            assert not diff
        finally:
            await client.drop_database(control.name)
            await client.drop_database(merged.name)
            await client.close()

    asyncio.run(run())


async def test_two_people_saying_the_same_thing_keep_their_own_rows_through_an_unmerge(
    db: Db,
) -> None:
    # Same trait, value, time and source: one row per event, not one per fact.
    await db[EVENTS].insert_many(
        [
            event("identify", anonymous_id="a1", traits={"email": "a@x.io", "city": "Oslo"}, at=1),
            event("identify", anonymous_id="b1", traits={"email": "b@x.io", "city": "Oslo"}, at=1),
        ]
    )
    await drain(builder_for(db))
    a, b = await owner(db, "email:a@x.io"), await owner(db, "email:b@x.io")
    before = {pid: await snapshot(db, pid) for pid in (a, b)}
    merges = merges_on(db)
    record = await merges.merge(survivor_id=a, merged_id=b, actor=ADMIN, reason="r")
    await merges.unmerge(record.id, actor=ADMIN, reason="two people")
    assert {pid: await snapshot(db, pid) for pid in (a, b)} == before
