"""The `kindred identities` and `kindred dedupe` commands: identity reports and batch matching."""

from typing import Annotated

import typer
from pymongo.asynchronous.database import AsyncDatabase
from rich.markup import escape
from rich.table import Table

from app.cli import (
    DatabaseOption,
    DataDirOption,
    MongoUriOption,
    _on_database,
    _when,
    cli,
    load_settings,
    out,
)
from app.mongo import Document
from identity.service import IdentityService, SharedIdentifier, ValidationCount
from identity.store import IdentityStore
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
