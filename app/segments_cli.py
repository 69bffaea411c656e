"""The `kindred segments` commands: templates, definitions, recomputes and exports."""

import csv
import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from pymongo.asynchronous.database import AsyncDatabase
from rich.markup import escape
from rich.table import Table

from app.cli import (
    DatabaseOption,
    DataDirOption,
    MongoUriOption,
    _on_database,
    cli,
    err,
    load_settings,
    out,
    progress_bar,
)
from app.mongo import Document
from profiles import traits as trait_rules
from profiles.errors import KindredError
from profiles.segments.service import RecomputeSummary, SegmentService, mailable_pipeline
from profiles.segments.store import SegmentStore
from profiles.store import ProfileStore
from profiles.webhooks.service import WebhookService

segments_cli = typer.Typer(
    help="Segments: install the built-in templates, create, recompute, export.",
    no_args_is_help=True,
)
cli.add_typer(segments_cli, name="segments")

EXPORT_BATCH = 500


class ExportFormat(StrEnum):
    """How an export writes members."""

    CSV = "csv"
    JSONL = "jsonl"


def _service(db: AsyncDatabase[Document]) -> SegmentService:
    return SegmentService(db.client, SegmentStore(db), sink=WebhookService.on(db))


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _summary_table(title: str, summaries: list[RecomputeSummary]) -> Table:
    table = Table(title=title)
    for column in ("segment", "version", "members", "entered", "exited", "seconds"):
        table.add_column(column, justify="left" if column == "segment" else "right")
    for s in summaries:
        table.add_row(
            s.segment_id,
            str(s.version),
            f"{s.size:,}",
            f"{s.entered:,}",
            f"{s.exited:,}",
            f"{s.seconds:.2f}",
        )
    return table


def _fail(exc: KindredError) -> None:
    err.print(f"[red]error:[/red] {escape(exc.message)}")
    raise typer.Exit(2)


@segments_cli.command("templates")
def segments_templates(
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Installs the built-in segments (cart abandoners, dormant, RFM quadrants…); rerunnable."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)

    async def install(db: AsyncDatabase[Document]) -> list[tuple[str, str, int]]:
        return await _service(db).install_templates(now=_now(), actor="cli")

    rows = _on_database(settings, install)
    table = Table(title="segment templates")
    for column in ("segment", "status", "members"):
        table.add_column(column, justify="right" if column == "members" else "left")
    for segment_id, status, size in rows:
        table.add_row(segment_id, status, f"{size:,}")
    out.print(table)


@segments_cli.command("list")
def segments_list(
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Lists segments with their version and size."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    found = _on_database(settings, lambda db: _service(db).store.live())
    table = Table(title="segments")
    for column in ("id", "name", "version", "members"):
        table.add_column(column, justify="right" if column in ("version", "members") else "left")
    for s in found:
        table.add_row(s.id, escape(s.name), str(s.version), f"{s.size:,}")
    out.print(table)


@segments_cli.command("create")
def segments_create(
    name: Annotated[str, typer.Option("--name", help="The segment's name.")],
    definition_file: Annotated[
        Path,
        typer.Option(
            "--definition",
            help='A JSON file holding {"version": 1, "rule": {…}} (see docs/segments.md).',
            exists=True,
            dir_okay=False,
        ),
    ],
    description: Annotated[str, typer.Option("--description")] = "",
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Creates a segment from a JSON definition and evaluates it."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    try:
        definition = json.loads(definition_file.read_text())
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/red] --definition: {escape(str(exc))}")
        raise typer.Exit(2) from None
    if not isinstance(definition, dict):
        err.print('[red]error:[/red] --definition: expected {"version": 1, "rule": {…}}')
        raise typer.Exit(2)

    async def create(db: AsyncDatabase[Document]) -> tuple[str, int]:
        service = _service(db)
        record = await service.create(
            name=name, definition=definition, description=description, actor="cli", now=_now()
        )
        return record.id, (await service.get(record.id)).size

    try:
        segment_id, size = _on_database(settings, create)
    except KindredError as exc:
        _fail(exc)
        return
    out.print(f"created {segment_id} with {size:,} members")


@segments_cli.command("recompute")
def segments_recompute(
    segment_id: Annotated[str | None, typer.Argument(help="A segment id; all when absent.")] = None,
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Evaluates segments over every profile in the database and applies the difference."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)

    async def recompute(db: AsyncDatabase[Document]) -> list[RecomputeSummary]:
        service = _service(db)
        with progress_bar() as report:
            if segment_id is None:
                summaries = await service.recompute_all(now=_now(), progress=report)
            else:
                summaries = [await service.recompute(segment_id, now=_now(), progress=report)]
            await service.schedule(now=_now(), progress=report)
        return summaries

    try:
        summaries = _on_database(settings, recompute)
    except KindredError as exc:
        _fail(exc)
        return
    out.print(_summary_table("recompute", summaries))


@segments_cli.command("export")
def segments_export(
    segment_id: Annotated[str, typer.Argument(help="The segment to export.")],
    format: Annotated[ExportFormat, typer.Option("--format", help="csv or jsonl.")] = (
        ExportFormat.CSV
    ),
    traits: Annotated[
        str, typer.Option("--traits", help="Comma-separated trait keys to include.")
    ] = "email,first_name,last_name",
    mailable: Annotated[
        bool,
        typer.Option(
            "--mailable",
            help="Only members contactable by email: valid email, not unsubscribed, "
            "email_marketing consent granted.",
        ),
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Streams a segment's members as CSV or JSON lines, a page at a time."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    keys = [k.strip() for k in traits.split(",") if k.strip()]
    try:
        for key in keys:
            trait_rules.check_key(key)
    except KindredError as exc:
        err.print(f"[red]error:[/red] --traits: {escape(exc.message)}")
        raise typer.Exit(2) from None

    async def export(db: AsyncDatabase[Document]) -> int:
        service = _service(db)
        record = await service.get(segment_id)
        pipeline = mailable_pipeline(now=_now()) if mailable else []
        store = ProfileStore(db)
        stream: TextIO = output.open("w", newline="") if output else sys.stdout
        written = 0
        try:
            writer = _Writer(stream, format, keys)
            with progress_bar() as report:
                after: str | None = None
                while True:
                    ids, more = await service.store.member_page(
                        segment_id, first=EXPORT_BATCH, after=after, pipeline=pipeline
                    )
                    profiles = await store.get_many(ids, trait_keys=keys)
                    for pid in ids:
                        if pid in profiles:
                            writer.write(pid, profiles[pid].traits)
                            written += 1
                    report("exporting", written, record.size or None)
                    if not more or not ids:
                        break
                    after = ids[-1]
        finally:
            if output:
                stream.close()
            else:
                stream.flush()
        return written

    try:
        written = _on_database(settings, export)
    except KindredError as exc:
        _fail(exc)
        return
    err.print(f"exported {written:,} members of {segment_id}")


class _Writer:
    """Writes one member per line, as CSV (with a header) or as JSON."""

    def __init__(self, stream: TextIO, format: ExportFormat, keys: list[str]) -> None:
        self.stream = stream
        self.format = format
        self.keys = keys
        self.csv = csv.writer(stream) if format is ExportFormat.CSV else None
        if self.csv is not None:
            self.csv.writerow(["profile_id", *keys])

    def write(self, profile_id: str, traits: Any) -> None:
        values = {k: (traits[k].value if k in traits else None) for k in self.keys}
        if self.csv is not None:
            self.csv.writerow([profile_id, *("" if v is None else v for v in values.values())])
        else:
            self.stream.write(json.dumps({"profile_id": profile_id, **values}, default=str) + "\n")
