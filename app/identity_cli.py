"""The `kindred identities` and `kindred dedupe` commands: identity reports, batch matching."""

import dataclasses
from datetime import UTC, datetime
from typing import Annotated

import typer
from pymongo.asynchronous.database import AsyncDatabase
from rich.markup import escape
from rich.table import Table

from app import worker
from app.cli import (
    DatabaseOption,
    DataDirOption,
    MongoUriOption,
    _on_database,
    _when,
    cli,
    load_settings,
    out,
    progress_bar,
    summary_table,
)
from app.mongo import Document
from app.state import profile_service
from identity.matching_service import MatchOutcome, MatchService
from identity.service import IdentityService, SharedIdentifier, ValidationCount
from identity.store import IdentityStore, SuggestionStore
from profiles.store import ProfileStore

identities_cli = typer.Typer(
    help="Report on identity resolution: invalid identifiers, shared devices.",
    no_args_is_help=True,
)
cli.add_typer(identities_cli, name="identities")


@identities_cli.command("report")
def identities_report(
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="Most shared identifiers to list.")
    ] = 50,
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Counts profiles by email and phone validation status, and lists shared identifiers."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)

    async def report(
        db: AsyncDatabase[Document],
    ) -> tuple[list[ValidationCount], list[SharedIdentifier]]:
        service = IdentityService(identities=IdentityStore(db), profiles=ProfileStore(db))
        return await service.validation_report(), await service.shared_identifiers(first=limit)

    counts, shared = _on_database(settings, report)
    table = Table(title="validation (live profiles)")
    for column in ("field", "status", "reason"):
        table.add_column(column, no_wrap=True)
    table.add_column("profiles", justify="right")
    for row in counts:
        table.add_row(row.field, row.status, row.reason or "", f"{row.profiles:,}")
    out.print(table)
    shared_table = Table(title="shared identifiers (they link no one)")
    for column in ("kind", "value", "people", "found", "held by", "device profile"):
        shared_table.add_column(column, no_wrap=True)
    for item in shared:
        shared_table.add_row(
            item.kind,
            escape(item.value),
            str(item.people),
            _when(item.shared_at),
            item.held_by or "",
            item.device_profile,
        )
    out.print(shared_table)


@cli.command("dedupe")
def dedupe_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would happen; write nothing.")
    ] = False,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge/--no-merge",
            help="Merge pairs at or above KINDRED_MATCH_AUTO_MERGE whose email or phone agrees "
            "(the default); with --no-merge they are suggested instead.",
        ),
    ] = True,
    fit: Annotated[
        bool,
        typer.Option(
            "--fit/--no-fit",
            help="Fit the model's weights to these profiles by EM (the default), or score "
            "with the stored model.",
        ),
    ] = True,
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Finds look-alike profiles across the whole database; safe to run again."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    match_settings = settings.match_settings()
    if not merge:
        match_settings = dataclasses.replace(match_settings, merge=False)

    async def run(db: AsyncDatabase[Document]) -> tuple[MatchOutcome, int]:
        profiles = profile_service(db, settings)
        identities = IdentityStore(db)
        service = MatchService(
            profiles=profiles.store,
            identities=identities,
            suggestions=SuggestionStore(db),
            settings=match_settings,
        )
        with progress_bar() as progress:
            outcome = await service.dedupe(
                dry_run=dry_run, fit=fit, progress=progress, now=datetime.now(UTC)
            )
            merged = 0
            if not dry_run and outcome.merges:
                builder = worker.build(db.client, settings, profiles)
                for done, sure in enumerate(outcome.merges, 1):
                    merged += await builder.merge_sure(sure)
                    progress("merging", done, len(outcome.merges))
        return outcome, merged

    outcome, merged = _on_database(settings, run)
    rows = [
        ("profiles read", f"{outcome.profiles:,}"),
        ("candidate pairs compared", f"{outcome.candidate_pairs:,}"),
        ("blocks skipped as oversized", f"{outcome.blocks_skipped:,}"),
        ("model", outcome.model),
        ("suggestions (at or above the suggest threshold)", f"{outcome.suggested:,}"),
        ("  of which new", "-" if dry_run else f"{outcome.new_suggestions:,}"),
        ("  of which sure but not merged (user ids, limits)", f"{outcome.downgraded:,}"),
        ("automatic merges" + (" (would be)" if dry_run else ""), f"{len(outcome.merges):,}"),
        ("seconds", f"{outcome.seconds:.1f}"),
    ]
    if not dry_run and merged != len(outcome.merges):
        rows.append(
            ("  merges skipped (merged elsewhere meanwhile)", f"{len(outcome.merges) - merged:,}")
        )
    out.print(summary_table("dedupe" + (" (dry run: nothing written)" if dry_run else ""), rows))
