"""The outbox's search for due rows, against the real database."""

from datetime import timedelta

from pymongo.asynchronous.database import AsyncDatabase

from app.mongo import Document, ensure_indexes
from profiles.webhooks import store as webhook_store
from profiles.webhooks.store import WebhookStore
from tests.profiles.webhooks.helpers import transition, utcnow


async def _store(db: AsyncDatabase[Document], clock: list[float]) -> WebhookStore:
    await ensure_indexes(db, [webhook_store.INDEXES])
    return WebhookStore(db, clock=lambda: clock[0])


async def _add(store: WebhookStore, profile_id: str, *, due: timedelta) -> None:
    t0 = utcnow()
    await store.add_deliveries([("whk_1", transition(profile_id=profile_id))], now=t0 + due)


async def _claim(store: WebhookStore, *, now_in: timedelta, limit: int = 10) -> list[str]:
    """Leases what is due and returns the profiles of the rows leased."""
    now = utcnow() + now_in
    ids = await store.due_ids(now=now, limit=limit)
    leased = await store.lease(ids, now=now, until=now + timedelta(hours=1), owner=str(ids))
    return [d.profile_id for d in leased]


async def test_due_rows_come_longest_waiting_first_a_batch_at_a_time(
    db: AsyncDatabase[Document],
) -> None:
    store = await _store(db, [0.0])
    for n in range(5):
        await _add(store, f"prf_{n}", due=timedelta(minutes=-10 + 2 * n))
    await _add(store, "prf_later", due=timedelta(minutes=10))

    first = await _claim(store, now_in=timedelta(0), limit=2)
    second = await _claim(store, now_in=timedelta(0), limit=2)
    third = await _claim(store, now_in=timedelta(0), limit=2)
    fourth = await _claim(store, now_in=timedelta(0), limit=2)

    assert (first, second, third, fourth) == (["prf_0", "prf_1"], ["prf_2", "prf_3"], ["prf_4"], [])


async def test_a_row_below_the_floor_is_found_when_nothing_is_above_it(
    db: AsyncDatabase[Document],
) -> None:
    store = await _store(db, [0.0])
    await _add(store, "prf_A", due=timedelta(minutes=-1))
    assert await _claim(store, now_in=timedelta(0)) == ["prf_A"]

    await _add(store, "prf_B", due=timedelta(minutes=-5))  # older than the remembered floor

    assert await _claim(store, now_in=timedelta(0)) == ["prf_B"]


async def test_a_row_below_the_floor_waits_at_most_until_the_floor_is_looked_up_again(
    db: AsyncDatabase[Document],
) -> None:
    clock = [0.0]
    store = await _store(db, clock)
    await _add(store, "prf_A", due=timedelta(minutes=-1))
    assert await _claim(store, now_in=timedelta(0)) == ["prf_A"]
    await _add(store, "prf_B", due=timedelta(minutes=-5))
    await _add(store, "prf_C", due=timedelta(seconds=-10))

    before = await _claim(store, now_in=timedelta(0), limit=1)
    clock[0] += webhook_store.FLOOR_RECHECK_S + 1
    after = await _claim(store, now_in=timedelta(0), limit=1)

    assert (before, after) == (["prf_C"], ["prf_B"])
