"""Ingest orchestration: store a validated batch, list and replay quarantined events.

These are the calls the HTTP routes, the CLI and (later) GraphQL share.
"""

import asyncio
import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pymongo.asynchronous.database import AsyncDatabase

from app.ingest.models import Limits, QuarantinedEvent, Rejection, ValidatedBatch, validate_event
from app.ingest.store import EventStore, events_write_concern, now_ms
from app.mongo import Document
from app.settings import Settings

REPLAY_PAGE = 500


@dataclass(frozen=True)
class Accepted:
    """What storing a batch did: events new to the log, re-sent ones, and rejections kept."""

    stored: int
    duplicates: int
    rejected: list[Rejection]

    @property
    def accepted(self) -> int:
        """Returns how many events were valid (stored now or before)."""
        return self.stored + self.duplicates


@dataclass
class ReplaySummary:
    """What a quarantine replay did."""

    stored: int = 0
    duplicates: int = 0
    still_invalid: int = 0
    not_found: int = 0

    @property
    def replayed(self) -> int:
        """Returns how many quarantined events were looked at."""
        return self.stored + self.duplicates + self.still_invalid


class IngestService:
    """Stores events durably, quarantines the invalid ones, and replays quarantine."""

    def __init__(self, store: EventStore, *, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits or Limits()

    @classmethod
    def from_settings(cls, db: AsyncDatabase[Document], settings: Settings) -> "IngestService":
        """Returns the service with the settings' limits and event write concern."""
        store = EventStore(db, write_concern=events_write_concern(settings.events_write_concern))
        limits = Limits(
            max_event_bytes=settings.ingest_max_event_bytes,
            max_batch_bytes=settings.ingest_max_batch_bytes,
            max_batch_events=settings.ingest_max_batch_events,
        )
        return cls(store, limits=limits)

    async def accept(
        self, batch: ValidatedBatch, *, source: str, received_at: datetime
    ) -> Accepted:
        """Appends valid events and quarantines rejected ones; both are durable on return."""
        appended = await self.store.append(batch.events)
        await self.quarantine(batch, source=source, received_at=received_at)
        return Accepted(appended.inserted, appended.duplicates, list(batch.rejections))

    async def quarantine(
        self, batch: ValidatedBatch, *, source: str, received_at: datetime
    ) -> builtins.list[str]:
        """Keeps the batch's rejections in quarantine; returns their quarantine ids."""
        return await self.store.add_to_quarantine(
            [(r.message_id, r.reason, r.raw) for r in batch.rejections],
            source=source,
            received_at=received_at,
        )

    async def quarantined(
        self, *, limit: int = 50, after: str | None = None
    ) -> builtins.list[QuarantinedEvent]:
        """Returns quarantined events, oldest first, `limit` at a time after the id `after`."""
        return await self.store.quarantined(limit=limit, after=after)

    async def replay(self, ids: Sequence[str] | None = None) -> ReplaySummary:
        """Re-validates quarantined events (these ids, or all when None).

        Valid ones are appended to the event log (a messageId already there counts as a
        duplicate) and leave quarantine; invalid ones stay with their new reason.
        """
        summary = ReplaySummary()
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            rows = await self.store.quarantined_by_id(wanted)
            summary.not_found = len(wanted) - len(rows)
            for start in range(0, len(rows), REPLAY_PAGE):
                await self._replay_rows(rows[start : start + REPLAY_PAGE], summary)
            return summary
        after: str | None = None
        while rows := await self.store.quarantined(limit=REPLAY_PAGE, after=after):
            await self._replay_rows(rows, summary)
            after = rows[-1].id
        return summary

    async def _replay_rows(self, rows: Sequence[QuarantinedEvent], summary: ReplaySummary) -> None:
        outcomes = await asyncio.to_thread(self._revalidate, rows)
        valid = [(row, doc) for row, doc in outcomes if not isinstance(doc, str)]
        reasons = {row.id: doc for row, doc in outcomes if isinstance(doc, str)}
        # Append before release: a crash between the two leaves the event in both
        # places, and the next replay finds it already stored.
        appended = await self.store.append([doc for _, doc in valid])
        await self.store.release([row.id for row, _ in valid])
        await self.store.update_reasons(reasons, at=now_ms())
        summary.stored += appended.inserted
        summary.duplicates += appended.duplicates
        summary.still_invalid += len(reasons)

    def _revalidate(
        self, rows: Sequence[QuarantinedEvent]
    ) -> builtins.list[tuple[QuarantinedEvent, Document | str]]:
        outcomes: builtins.list[tuple[QuarantinedEvent, Document | str]] = []
        for row in rows:
            try:
                item = json.loads(row.raw)
            except ValueError:
                outcomes.append((row, "raw: the kept event is not JSON"))
                continue
            outcome = validate_event(
                item, source=row.source, received_at=row.received_at, limits=self.limits
            )
            outcomes.append((row, outcome.reason if isinstance(outcome, Rejection) else outcome))
        return outcomes
