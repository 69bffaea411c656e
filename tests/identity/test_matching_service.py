"""Fuzzy matching against the real database: the online path through events, and dedupe runs."""

from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.eventlog import EVENTS
from identity.matching_service import MatchService, MatchSettings
from identity.store import MERGES, SUGGESTIONS, IdentityStore, SuggestionStatus, SuggestionStore
from profiles.store import PROFILES, ProfileStore
from tests.fixtures.events import builder_for, drain, event
from tests.fixtures.factories import seed_profile

Db = AsyncDatabase[dict[str, Any]]
NOW = datetime(2026, 3, 2, tzinfo=UTC)

KATHERINE = {
    "first_name": "Katherine",
    "last_name": "Johnson",
    "email": "kj@example.com",
    "address": "12 Baker Street",
    "postcode": "SW1A 1AA",
    "city": "London",
    "birthday": "1980-04-02",
}
# The same woman, signed up again at work: a typo'd name, another email.
CATHERINE = {
    "first_name": "Catherine",
    "last_name": "Jonson",
    "email": "cathy@work.example",
    "address": "12 Baker St",
    "postcode": "SW1A1AA",
    "city": "London",
    "birthday": "1980-04-02",
}
# Another woman of the same surname in the same city.
MARY = {
    "first_name": "Mary",
    "last_name": "Johnson",
    "email": "mary@example.net",
    "address": "48 Elm Road",
    "postcode": "E1 6AN",
    "city": "London",
    "birthday": "1962-11-30",
}


def matcher(db: Db) -> MatchService:
    return MatchService(
        profiles=ProfileStore(db), identities=IdentityStore(db), suggestions=SuggestionStore(db)
    )


async def _suggestions(db: Db) -> list[dict[str, Any]]:
    return [doc async for doc in db[SUGGESTIONS].find({}).sort("_id")]


async def test_a_typo_duplicate_arriving_as_events_becomes_a_suggestion(db: Db) -> None:
    await db[EVENTS].insert_many(
        [
            event("identify", user_id="u1", traits=KATHERINE, at=0),
            event("identify", user_id="u2", traits=MARY, at=1),
            event("identify", user_id="u3", traits=CATHERINE, at=2),
        ]
    )
    await drain(builder_for(db, matcher=matcher(db)))
    [suggestion] = await _suggestions(db)
    owners = {
        doc["_id"]: doc["profile_id"] async for doc in db["identities"].find({"kind": "user_id"})
    }
    assert set(suggestion["profiles"]) == {owners["user_id:u1"], owners["user_id:u3"]}
    assert suggestion["status"] == "open"
    assert suggestion["source"] == "online"
    evidence = {e["field"]: e["level"] for e in suggestion["evidence"]}
    assert evidence["birth_date"] == "exact"
    assert evidence["email"] != "exact"
    assert await db[PROFILES].count_documents({"merged_into": {"$ne": None}}) == 0


async def test_a_sure_match_between_two_user_ids_is_only_suggested(db: Db) -> None:
    # The same phone and name under two logins: never merged automatically.
    kate = {"first_name": "Kate", "last_name": "Johnson", "phone": "+1 415 555 0100"}
    katherine = {"first_name": "Katherine", "last_name": "Johnson", "phone": "(415) 555-0100"}
    await db[EVENTS].insert_many(
        [
            event("identify", user_id="u1", traits=kate, at=0),
            event("identify", user_id="u2", traits=katherine, at=1),
        ]
    )
    await drain(builder_for(db, matcher=matcher(db)))
    [suggestion] = await _suggestions(db)
    assert suggestion["note"] == "not merged automatically: different user ids"
    assert await db[PROFILES].count_documents({"merged_into": {"$ne": None}}) == 0


async def test_dedupe_merges_sure_pairs_and_suggests_likely_ones(db: Db) -> None:
    # Imported without identity claims for email, so the graph never linked them.
    kate = await seed_profile(db, {"crm_id": "c1"}, {**KATHERINE, "phone": "+14155550100"})
    kate_again = await seed_profile(
        db, {"crm_id": "c2"}, {**KATHERINE, "first_name": "Kate", "phone": "+14155550100"}
    )
    cathy = await seed_profile(db, {"crm_id": "c3"}, CATHERINE)
    await seed_profile(db, {"crm_id": "c4"}, MARY)
    outcome = await matcher(db).dedupe(now=NOW)
    assert [(m.survivor, m.merged) for m in outcome.merges] == [(kate, kate_again)]
    assert outcome.profiles == 4
    assert outcome.candidate_pairs >= 3
    suggested = [set(s["profiles"]) for s in await _suggestions(db)]
    assert {kate, cathy} in suggested or {kate_again, cathy} in suggested
    assert all(len(pair & {kate, kate_again, cathy}) == 2 for pair in suggested)
    # The merge itself is the caller's (the CLI runs it through the builder's merge).
    assert await db[MERGES].count_documents({}) == 0


async def test_dedupe_runs_again_without_duplicating_suggestions(db: Db) -> None:
    for n, traits in enumerate((KATHERINE, CATHERINE, MARY)):
        await seed_profile(db, {"crm_id": f"c{n}"}, traits)
    service = matcher(db)
    first = await service.dedupe(now=NOW)
    second = await service.dedupe(now=NOW)
    assert first.new_suggestions == first.suggested >= 1
    assert (second.suggested, second.new_suggestions) == (first.suggested, 0)
    assert len(await _suggestions(db)) == first.suggested


async def test_a_rejected_suggestion_stays_rejected_when_found_again(db: Db) -> None:
    for n, traits in enumerate((KATHERINE, CATHERINE)):
        await seed_profile(db, {"crm_id": f"c{n}"}, traits)
    service = matcher(db)
    await service.dedupe(now=NOW)
    [suggestion] = await _suggestions(db)
    await SuggestionStore(db).decide(
        suggestion["_id"], SuggestionStatus.REJECTED, note="not the same person", now=NOW
    )
    await service.dedupe(now=NOW)
    [again] = await _suggestions(db)
    assert again["status"] == "rejected"


async def test_a_dry_run_writes_nothing(db: Db) -> None:
    for n, traits in enumerate((KATHERINE, CATHERINE)):
        await seed_profile(db, {"crm_id": f"c{n}"}, traits)
    outcome = await matcher(db).dedupe(dry_run=True, now=NOW)
    assert outcome.suggested == 1
    assert await _suggestions(db) == []
    assert await db[PROFILES].count_documents({"match_keys": {"$exists": True}}) == 0
    assert await db["match_models"].count_documents({}) == 0


async def test_chained_sure_pairs_never_join_two_user_ids(db: Db) -> None:
    # b looks like a and like c, which are two customers: b joins one of them only.
    same = {**KATHERINE, "phone": "+14155550100"}
    a = await seed_profile(db, {"user_id": "u1"}, same)
    b = await seed_profile(db, {"crm_id": "c1"}, {**same, "first_name": "Kate"})
    c = await seed_profile(db, {"user_id": "u2"}, {**same, "first_name": "Katharine"})
    outcome = await matcher(db).dedupe(now=NOW)
    assert len(outcome.merges) == 1
    [merge] = outcome.merges
    assert merge.merged == b
    assert merge.survivor in {a, c}
    notes = [s["note"] async for s in db[SUGGESTIONS].find({"note": {"$ne": None}})]
    assert notes
    assert set(notes) == {"not merged automatically: different user ids"}


class _BrokenMatcher(MatchService):
    async def refresh(self, profile_ids: Any, *, now: datetime) -> Any:
        raise RuntimeError("a bug in matching")


async def test_a_matching_failure_does_not_fail_the_applied_batch(db: Db) -> None:
    await db[EVENTS].insert_one(event("identify", user_id="u1", traits=KATHERINE))
    broken = _BrokenMatcher(
        profiles=ProfileStore(db), identities=IdentityStore(db), suggestions=SuggestionStore(db)
    )
    result = await builder_for(db, matcher=broken).run_batch()
    assert result.applied == 1
    assert await db[PROFILES].count_documents({}) == 1


async def test_with_merges_off_a_sure_pair_is_only_suggested(db: Db) -> None:
    same = {**KATHERINE, "phone": "+14155550100"}
    await seed_profile(db, {"crm_id": "c1"}, same)
    await seed_profile(db, {"crm_id": "c2"}, {**same, "first_name": "Kate"})
    service = MatchService(
        profiles=ProfileStore(db),
        identities=IdentityStore(db),
        suggestions=SuggestionStore(db),
        settings=MatchSettings(merge=False),
    )
    outcome = await service.dedupe(now=NOW)
    assert outcome.merges == []
    [suggestion] = await _suggestions(db)
    assert suggestion["note"] == "not merged automatically: automatic merges are off"
