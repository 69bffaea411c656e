"""Store behaviour that callers rely on: listings and projections."""

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from profiles.store import ProfileStore
from tests.fixtures.factories import seed_profile

Db = AsyncDatabase[dict[str, Any]]


async def _walk(store_for_page: Any, first: int) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page, more = await store_for_page().page(first=first, after=after, trait_keys=["n"])
        seen += [p.id for p in page]
        if not more:
            return seen
        after = page[-1].id


async def test_a_continued_listing_and_fresh_page_queries_agree(db: Db) -> None:
    ids = [await seed_profile(db, {"user_id": f"u{i}"}, {"n": i, "other": "x"}) for i in range(9)]
    held = ProfileStore(db)
    continued = await _walk(lambda: held, 2)
    fresh = await _walk(lambda: ProfileStore(db), 2)
    assert continued == fresh == sorted(ids)
    assert held._open_pages == {}  # a finished walk leaves no cursor open


async def test_two_interleaved_listings_do_not_mix(db: Db) -> None:
    for i in range(6):
        await seed_profile(db, {"user_id": f"u{i}"}, {"n": i} if i % 2 else {"m": i})
    store = ProfileStore(db)
    all_first, _ = await store.page(first=2, after=None)
    with_n, _ = await store.page(first=2, after=None, has_trait="n")
    all_second, _ = await store.page(first=2, after=all_first[-1].id)
    n_second, _ = await store.page(first=2, after=with_n[-1].id, has_trait="n")
    assert all("n" in p.traits for p in with_n + n_second)
    assert len({p.id for p in all_first + all_second}) == 4
    assert all_second[0].id > all_first[-1].id


async def test_a_projected_read_returns_only_the_asked_traits(db: Db) -> None:
    pid = await seed_profile(db, {"user_id": "u1"}, {"a": 1, "b": 2, "c": 3})
    profiles = await ProfileStore(db).get_many([pid], trait_keys=["a", "c"])
    assert set(profiles[pid].traits) == {"a", "c"}
    assert profiles[pid].identifiers[0].value == "u1"
