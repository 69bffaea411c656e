"""Segments against the real database: real-time entries and exits, time rules, versions."""

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app import scheduler
from app.eventlog import EVENTS, EventLog
from identity.merge import Actor
from identity.service import MergeService
from identity.store import IDENTITIES
from profiles.segments.models import Change
from profiles.segments.service import InvalidSegment, SegmentNotFound, SegmentService, Touch
from profiles.segments.store import SEGMENT_LOG, SegmentStore
from profiles.segments.templates import TEMPLATES
from profiles.service import ProfileService, utcnow
from profiles.store import PROFILES, ProfileStore
from tests.fixtures.events import T0, builder_for, drain, event

Db = AsyncDatabase[dict[str, Any]]
CART = next(t for t in TEMPLATES if t.id == "seg_cart_abandoners")
PRO = {"version": 1, "rule": {"type": "trait", "key": "plan", "op": "eq", "value": "pro"}}
BUYER = {"version": 1, "rule": {"type": "event", "name": "Order Completed", "within": "30d"}}


def segments_on(db: Db) -> SegmentService:
    """Returns the segment service on the test database."""
    return SegmentService(db.client, SegmentStore(db))


async def owner(db: Db, key: str) -> str:
    doc = await db[IDENTITIES].find_one({"_id": key})
    assert doc is not None, key
    return str(doc["profile_id"])


async def members(db: Db, segment_id: str) -> set[str]:
    return {d["_id"] async for d in db[PROFILES].find({"segments": segment_id})}


async def log_rows(db: Db, **query: Any) -> list[dict[str, Any]]:
    return [d async for d in db[SEGMENT_LOG].find(query).sort("seq", 1)]


def hours_ago(hours: float) -> float:
    """Returns `at` for the events fixture (hours after its T0) for `hours` before now."""
    return (utcnow() - T0).total_seconds() / 3600 - hours


async def test_an_event_enters_and_leaves_segments_in_real_time_with_its_cause(db: Db) -> None:
    service = segments_on(db)
    now = utcnow()
    pro = await service.create(name="Pro plan", definition=PRO, actor="test", now=now)
    buyers = await service.create(name="Buyers", definition=BUYER, actor="test", now=now)
    builder = builder_for(db, segments=service)
    await db[EVENTS].insert_one(
        event("identify", user_id="u1", traits={"plan": "pro"}, at=hours_ago(2))
    )
    await drain(builder)
    ada = await owner(db, "user_id:u1")
    assert await members(db, pro.id) == {ada}
    assert await members(db, buyers.id) == set()
    order = event("track", user_id="u1", event="Order Completed", at=hours_ago(1))
    await db[EVENTS].insert_one(order)
    await drain(builder)
    assert await members(db, buyers.id) == {ada}
    [entered] = await log_rows(db, segment_id=buyers.id)
    assert entered["change"] == "entered"
    assert entered["cause"] == {"kind": "event", "event_id": order["_id"]}
    assert entered["segment_version"] == 1
    await db[EVENTS].insert_one(
        event("identify", user_id="u1", traits={"plan": "free"}, at=hours_ago(0.5))
    )
    await drain(builder)
    assert await members(db, pro.id) == set()
    assert [r["change"] for r in await log_rows(db, segment_id=pro.id)] == ["entered", "exited"]
    assert (await service.get(pro.id)).size == 0
    assert (await service.get(buyers.id)).size == 1


async def test_cart_abandoners_enter_within_a_scheduler_period_of_48_hours(db: Db) -> None:
    service = segments_on(db)
    now = utcnow()
    cart = await service.create(name=CART.name, definition=CART.definition(), actor="test", now=now)
    builder = builder_for(db, segments=service)
    added = hours_ago(1)
    await db[EVENTS].insert_many(
        [
            # Ada adds to cart and leaves; Bob adds and orders; Cy only browses.
            event("identify", user_id="ada", traits={"email": "ada@x.io"}, at=added - 0.1),
            event("track", user_id="ada", event="Product Added", at=added),
            event("track", user_id="bob", event="Product Added", at=added),
            event("track", user_id="bob", event="Order Completed", at=added + 0.5),
            event("page", user_id="cy", name="Home", at=added),
        ]
    )
    await drain(builder)
    ada, bob, cy = [await owner(db, f"user_id:{u}") for u in ("ada", "bob", "cy")]
    doc = await db[PROFILES].find_one({"_id": ada})
    assert doc is not None
    deadline = doc["next_eval_at"]
    assert deadline == T0 + timedelta(hours=added) + timedelta(hours=48)
    others = [d async for d in db[PROFILES].find({"_id": {"$in": [bob, cy]}})]
    assert all(d.get("next_eval_at") is None for d in others)

    period = timedelta(seconds=5)
    assert await scheduler.tick(service, now=deadline - timedelta(seconds=1)) == 0
    assert await members(db, cart.id) == set()
    assert await scheduler.tick(service, now=deadline + period) == 1
    assert await members(db, cart.id) == {ada}
    [entered] = await log_rows(db, segment_id=cart.id)
    assert entered["profile_id"] == ada
    assert entered["cause"] == {"kind": "time"}
    # Nobody else was read or written: no other profile has a log row or a deadline.
    assert {r["profile_id"] for r in await log_rows(db)} == {ada}
    after = await db[PROFILES].find_one({"_id": ada})
    assert after is not None
    assert after.get("next_eval_at") is None

    # Ada orders: she leaves in real time.
    await db[EVENTS].insert_one(
        event("track", user_id="ada", event="Order Completed", at=hours_ago(0.2))
    )
    await drain(builder)
    assert await members(db, cart.id) == set()


async def test_a_new_version_is_evaluated_in_full_and_logged_with_its_version(db: Db) -> None:
    service = segments_on(db)
    builder = builder_for(db)
    await db[EVENTS].insert_many(
        [
            event("identify", user_id="u1", traits={"plan": "pro"}, at=1),
            event("identify", user_id="u2", traits={"plan": "team"}, at=1),
        ]
    )
    await drain(builder)
    u1, u2 = await owner(db, "user_id:u1"), await owner(db, "user_id:u2")
    now = utcnow()
    segment = await service.create(name="Paid", definition=PRO, actor="test", now=now)
    assert await members(db, segment.id) == {u1}
    wider = {
        "version": 1,
        "rule": {"type": "trait", "key": "plan", "op": "in", "value": ["pro", "team"]},
    }
    later = now + timedelta(seconds=1)
    updated = await service.update(segment.id, definition=wider, actor="test", now=later)
    assert updated.version == 2
    assert await members(db, segment.id) == {u1, u2}
    rows = await log_rows(db, segment_id=segment.id)
    assert [(r["profile_id"], r["segment_version"], r["cause"]["kind"]) for r in rows] == [
        (u1, 1, "recompute"),
        (u2, 2, "recompute"),
    ]
    versions = await service.store.versions_of(segment.id)
    assert [v["version"] for v in versions] == [2, 1]
    summary = await service.recompute(segment.id, now=later)
    assert (summary.entered, summary.exited, summary.size) == (0, 0, 2)


async def test_segments_may_use_segments_but_never_in_a_cycle(db: Db) -> None:
    service = segments_on(db)
    now = utcnow()
    base = await service.create(name="Pro", definition=PRO, actor="test", now=now)
    uses = {"version": 1, "rule": {"type": "segment", "id": base.id, "member": True}}
    derived = await service.create(name="Pro again", definition=uses, actor="test", now=now)
    loop = {"version": 1, "rule": {"type": "segment", "id": derived.id, "member": True}}
    with pytest.raises(InvalidSegment, match="cycle"):
        await service.update(base.id, definition=loop, actor="test", now=now)
    with pytest.raises(InvalidSegment, match="unknown segment"):
        await service.create(
            name="Nowhere",
            definition={"version": 1, "rule": {"type": "segment", "id": "seg_nope"}},
            actor="test",
            now=now,
        )
    with pytest.raises(InvalidSegment, match="used by"):
        await service.delete(base.id, now=now)

    # Real time: entering the base segment enters the derived one in the same pass.
    await db[EVENTS].insert_one(event("identify", user_id="u1", traits={"plan": "pro"}, at=1))
    await drain(builder_for(db, segments=service))
    u1 = await owner(db, "user_id:u1")
    assert await members(db, derived.id) == {u1}


async def test_deleting_a_segment_logs_every_exit(db: Db) -> None:
    service = segments_on(db)
    await db[EVENTS].insert_one(event("identify", user_id="u1", traits={"plan": "pro"}, at=1))
    await drain(builder_for(db))
    now = utcnow()
    segment = await service.create(name="Pro", definition=PRO, actor="test", now=now)
    assert await service.delete(segment.id, now=now + timedelta(seconds=1))
    assert await members(db, segment.id) == set()
    rows = await log_rows(db, segment_id=segment.id)
    assert [(r["change"], r["cause"]["kind"]) for r in rows] == [
        ("entered", "recompute"),
        ("exited", "deleted"),
    ]
    with pytest.raises(SegmentNotFound):
        await service.delete(segment.id, now=now)


async def test_concurrent_evaluations_log_each_change_once(db: Db) -> None:
    service = segments_on(db)
    await db[EVENTS].insert_one(event("identify", user_id="u1", traits={"plan": "free"}, at=1))
    await drain(builder_for(db))
    u1 = await owner(db, "user_id:u1")
    segment = await service.create(name="Pro", definition=PRO, actor="test", now=utcnow())
    await db[PROFILES].update_one({"_id": u1}, {"$set": {"traits.plan.value": "pro"}})
    touch = {u1: Touch(traits=frozenset({"plan"}))}
    await asyncio.gather(*(service.on_batch(touch, now=utcnow()) for _ in range(4)))
    rows = await log_rows(db, segment_id=segment.id)
    assert [r["change"] for r in rows] == [Change.ENTERED.value]


async def test_an_admin_merge_and_its_undo_re_evaluate_both_profiles_segments(db: Db) -> None:
    segments = segments_on(db)
    both = {
        "version": 1,
        "rule": {
            "type": "all",
            "of": [
                {"type": "trait", "key": "plan", "op": "eq", "value": "pro"},
                {"type": "trait", "key": "city", "op": "eq", "value": "Oslo"},
            ],
        },
    }
    await db[EVENTS].insert_many(
        [
            event("identify", user_id="u1", traits={"plan": "pro"}, at=1),
            event("identify", anonymous_id="a1", traits={"city": "Oslo"}, at=2),
        ]
    )
    await drain(builder_for(db))
    u1, a1 = await owner(db, "user_id:u1"), await owner(db, "anonymous_id:a1")
    segment = await segments.create(name="Pro in Oslo", definition=both, actor="t", now=utcnow())
    assert await members(db, segment.id) == set()
    profiles = ProfileService(ProfileStore(db))
    merges = MergeService.on(
        db, profiles=profiles, events=EventLog(db), changed=segments.after_merge
    )
    admin = Actor.admin("key_t", "t")
    record = await merges.merge(survivor_id=u1, merged_id=a1, actor=admin, reason="same")
    assert await members(db, segment.id) == {u1}
    [entered] = await log_rows(db, segment_id=segment.id)
    assert entered["cause"] == {"kind": "merge"}
    await merges.unmerge(record.id, actor=admin, reason="not the same")
    assert await members(db, segment.id) == set()
