"""The `kindred` command line."""

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import uvicorn
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from app import __version__, worker
from app.auth import (
    ALLOWED_SCOPES,
    InvalidKeyInput,
    KeyStore,
    Scope,
    ensure_dev_admin_key,
    validated_name,
    validated_scopes,
)
from app.embedded import EmbeddedError, EmbeddedServer, database_uri
from app.ingest.errors import InvalidSourceName, SourceExists
from app.ingest.models import check_source_name
from app.ingest.service import IngestService
from app.ingest.store import SourceStore
from app.logs import configure_logging
from app.mongo import Document, create_client, ensure_indexes, index_registry
from app.settings import Environment, LogFormat, LogLevel, Settings
from app.state import profile_service
from profiles.errors import KindredError
from profiles.models import TraitDefinition, TraitType
from profiles.service import ProfileService
from profiles.store import ProfileStore

if TYPE_CHECKING:
    # Imported where used: the Segment SDK it loads slows every other command's start.
    from app.demo import FirstStartLoader

T = TypeVar("T")

cli = typer.Typer(
    name="kindred",
    help="Kindred, an open-source customer data platform. Settings come from KINDRED_* "
    "environment variables; the flags below override them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Inspect the database Kindred uses.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
keys_cli = typer.Typer(
    help="Create, list and revoke API keys. Kindred stores only a hash of each secret.",
    no_args_is_help=True,
)
cli.add_typer(keys_cli, name="keys")
traits_cli = typer.Typer(
    help="Declare known traits: type, meaning, PII, precedence.", no_args_is_help=True
)
cli.add_typer(traits_cli, name="traits")
sources_cli = typer.Typer(
    help="Create, list and revoke sources: the write keys connectors send events with.",
    no_args_is_help=True,
)
cli.add_typer(sources_cli, name="sources")
quarantine_cli = typer.Typer(
    help="Review and replay events that failed validation.", no_args_is_help=True
)
cli.add_typer(quarantine_cli, name="quarantine")

err = Console(stderr=True, soft_wrap=True)
out = Console()

MongoUriOption = Annotated[
    str | None,
    typer.Option(
        "--mongodb-uri",
        help="MongoDB connection string (env KINDRED_MONGODB_URI). Without it Kindred uses "
        "its embedded database in --data-dir.",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Embedded database directory (env KINDRED_DATA_DIR, default ./kindred-data).",
        show_default=False,
    ),
]
LogLevelOption = Annotated[
    LogLevel | None,
    typer.Option(help="Log level (env KINDRED_LOG_LEVEL, default INFO).", show_default=False),
]
LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(
        help="text or json log lines (env KINDRED_LOG_FORMAT, default text).", show_default=False
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="Database name (env KINDRED_DATABASE, default kindred).",
        show_default=False,
    ),
]


def load_settings(**overrides: Any) -> Settings:
    """Returns settings from the environment, with the flags the user gave on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**given)


@contextlib.contextmanager
def resolved_uri(settings: Settings) -> Iterator[str]:
    """Yields the database URI: the configured one, the running owner's, or a server of our own."""
    if settings.mongodb_uri is not None:
        yield settings.mongodb_uri
        return
    try:
        with database_uri(settings.data_dir, cache_size=settings.embedded_cache_size) as uri:
            yield uri
    except EmbeddedError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM becomes a normal exit, so `finally` blocks stop the embedded server.
    raise SystemExit(128 + signum)


@cli.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to bind (env KINDRED_HOST, default 127.0.0.1).", show_default=False
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port to bind (env KINDRED_PORT, default 8000).", show_default=False),
    ] = None,
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
    env: Annotated[
        Environment | None,
        typer.Option(
            help="dev, or prod: no GraphQL IDE, no introspection (env KINDRED_ENV, default dev).",
            show_default=False,
        ),
    ] = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Once ready, load the demo data (`kindred demo`) in the background, unless "
            "the database has a `demo` source already. `make run` passes it.",
        ),
    ] = False,
) -> None:
    """Runs the HTTP and GraphQL service; starts the embedded database when no URI is set."""
    from app.main import create_app

    settings = load_settings(
        host=host,
        port=port,
        mongodb_uri=mongodb_uri,
        data_dir=data_dir,
        database=database,
        env=env,
        log_level=log_level,
        log_format=log_format,
    )
    configure_logging(settings.log_level, settings.log_format)
    signal.signal(signal.SIGTERM, _raise_system_exit)
    embedded: EmbeddedServer | None = None
    demo_loader: FirstStartLoader | None = None
    try:
        if settings.embedded:
            embedded = EmbeddedServer(settings.data_dir, cache_size=settings.embedded_cache_size)
            try:
                uri = embedded.start()
            except EmbeddedError as exc:
                err.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(1) from None
            settings = settings.model_copy(update={"mongodb_uri": uri})
        if settings.env is Environment.DEV and settings.mongodb_uri is not None:
            _announce_dev_admin_key(settings.mongodb_uri, settings.database)
        app = create_app(settings)
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_config=None, lifespan="on"
        )
        if demo:
            from app import demo as demo_data

            # Its own thread and SDK client: the server serves while the demo loads.
            demo_loader = demo_data.FirstStartLoader(settings)
            demo_loader.start()
        # Everything built so far lives as long as the process: keep the cyclic
        # garbage collector from rescanning it, which shortens its pauses.
        gc.freeze()
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        pass
    finally:
        if demo_loader is not None:
            demo_loader.stop()
        if embedded is not None:
            embedded.stop()


def _announce_dev_admin_key(uri: str, database: str) -> None:
    # A fresh dev database would otherwise have no key that can call the API.
    try:
        secret = asyncio.run(_with_database(uri, database, ensure_dev_admin_key))
    except PyMongoError as exc:
        reason = escape(str(exc))
        err.print(f"[yellow]warning:[/yellow] could not check for an admin API key: {reason}")
        return
    if secret is None:
        return
    err.print(
        "No admin API key existed, so Kindred created one named local-admin (dev only). "
        "It is shown once; keep it, and send it as `Authorization: Bearer <key>`:"
    )
    err.print(secret, markup=False, highlight=False)


@cli.command("worker")
def worker_command(
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Events per batch (env KINDRED_WORKER_BATCH_SIZE, default 500).",
            show_default=False,
        ),
    ] = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
) -> None:
    """Runs the profile builder: applies pending events to profiles until stopped.

    `kindred serve` runs one already (KINDRED_WORKER_IN_PROCESS); run more for
    throughput, on any machine that reaches the database.
    """
    settings = load_settings(
        mongodb_uri=mongodb_uri,
        data_dir=data_dir,
        database=database,
        worker_batch_size=batch_size,
        log_level=log_level,
        log_format=log_format,
    )
    configure_logging(settings.log_level, settings.log_format)
    with resolved_uri(settings) as uri:
        asyncio.run(_run_worker(uri, settings))


async def _run_worker(uri: str, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Finish the batch in hand, then exit.
        loop.add_signal_handler(signum, stop.set)
    client = create_client(uri)
    try:
        db = client[settings.database]
        await ensure_indexes(db, index_registry())
        builder = worker.build(client, settings, profile_service(db, settings))
        await worker.run(builder, stop, poll_seconds=settings.worker_poll_seconds)
    finally:
        await client.close()


@db_cli.command("status")
def db_status(
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Pings the database, ensures indexes, and lists collections with their sizes."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    rows = _on_database(settings, _collection_sizes)
    table = Table(title=f"database {settings.database}")
    table.add_column("collection")
    table.add_column("documents", justify="right")
    for name, count in rows:
        table.add_row(name, str(count))
    out.print(table)


async def _collection_sizes(db: AsyncDatabase[Document]) -> list[tuple[str, int]]:
    names = sorted(await db.list_collection_names())
    return [(name, await db[name].estimated_document_count()) for name in names]


async def _with_database(
    uri: str, database: str, work: Callable[[AsyncDatabase[Document]], Awaitable[T]]
) -> T:
    """Returns what `work` returns on the database, with its indexes ensured first."""
    client = create_client(uri)
    try:
        db = client[database]
        await ensure_indexes(db, index_registry())
        return await work(db)
    finally:
        await client.close()


def _on_database(settings: Settings, work: Callable[[AsyncDatabase[Document]], Awaitable[T]]) -> T:
    """Runs `work` on the configured database; a database failure exits 1 with its message."""
    with resolved_uri(settings) as uri:
        try:
            return asyncio.run(_with_database(uri, settings.database, work))
        except PyMongoError as exc:
            err.print(f"[red]error:[/red] database: {escape(str(exc))}")
            raise typer.Exit(1) from None


@contextlib.contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int | None], None]]:
    """Yields a progress callback `(stage, done, total)` drawing one bar per stage on stderr."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def report(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield report


def summary_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    """Returns a two-column table of labels and values, as long runs end with."""
    table = Table(title=title)
    table.add_column("", no_wrap=True)
    table.add_column("", justify="right")
    for label, value in rows:
        table.add_row(label, value)
    return table


def _when(at: datetime | None) -> str:
    return "" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


@keys_cli.command("create")
def keys_create(
    name: Annotated[
        str,
        typer.Option(
            "--name", help="A name that says who or what uses the key (1 to 100 characters)."
        ),
    ],
    scope: Annotated[
        list[Scope],
        typer.Option(
            "--scope",
            help=f"A scope the key grants; repeat for several. One of: {ALLOWED_SCOPES} "
            "(admin implies the others).",
            show_default=False,
        ),
    ],
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Creates an API key and prints its secret, the last line, once."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    # Checked before any database work, so a typo fails at once.
    try:
        validated_name(name)
        validated_scopes(scope)
    except InvalidKeyInput as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(2) from None
    key, secret = _on_database(settings, lambda db: KeyStore(db).create(name=name, scopes=scope))
    out.print(
        f"Created API key {key.id} ({escape(key.name)}) with scopes: "
        f"{', '.join(sorted(key.scopes))}"
    )
    out.print("Its secret follows. Store it now: it will not be shown again.")
    out.print(secret, markup=False, highlight=False, soft_wrap=True)


@keys_cli.command("list")
def keys_list(
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Lists API keys with their scopes and dates; never secrets."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    keys = _on_database(settings, lambda db: KeyStore(db).list())
    table = Table(title=f"API keys in {escape(settings.database)}")
    table.add_column("id", no_wrap=True)
    table.add_column("name")
    table.add_column("scopes")
    table.add_column("created")
    table.add_column("revoked")
    for key in keys:
        table.add_row(
            key.id,
            escape(key.name),
            ", ".join(sorted(key.scopes)),
            _when(key.created_at),
            _when(key.revoked_at),
        )
    out.print(table)


@keys_cli.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str, typer.Argument(help="The id of the key to revoke, as `kindred keys list` shows it.")
    ],
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Revokes an API key; a running service refuses it within 30 seconds."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    if not _on_database(settings, lambda db: KeyStore(db).revoke(key_id)):
        err.print(f"[red]error:[/red] no API key has the id {escape(key_id)}.")
        raise typer.Exit(1)
    out.print(
        f"Revoked {escape(key_id)}. Running services refuse it within 30 seconds, "
        "as they cache keys that long."
    )


@traits_cli.command("define")
def traits_define(
    key: Annotated[str, typer.Argument(help="The trait key, e.g. `age` or `company_size`.")],
    type_: Annotated[
        TraitType,
        typer.Option("--type", help="The declared type; values are coerced to it on write."),
    ],
    description: Annotated[str, typer.Option(help="What the trait means.")] = "",
    pii: Annotated[
        bool, typer.Option("--pii/--no-pii", help="Whether the trait is personal data.")
    ] = False,
    precedence: Annotated[
        list[str] | None,
        typer.Option(
            "--precedence",
            help="A source pattern (`crm`, `enrichment:*`, `*`), highest first; repeat for "
            "several. Overrides the global ranking for this trait.",
            show_default=False,
        ),
    ] = None,
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Declares a trait in the catalog, or updates its declaration."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    definition = TraitDefinition(
        key=key,
        type=type_,
        description=description,
        pii=pii,
        precedence=tuple(precedence) if precedence else None,
    )
    try:
        _on_database(settings, lambda db: ProfileService(ProfileStore(db)).define_trait(definition))
    except KindredError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(2) from None
    out.print(f"Declared {escape(key)} as {type_.value}.")


@traits_cli.command("list")
def traits_list(
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Lists the declared traits."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    entries = _on_database(settings, lambda db: ProfileStore(db).catalog_entries())
    table = Table(title="trait catalog")
    for column in ("key", "type", "pii", "precedence", "description"):
        table.add_column(column)
    for d in entries.values():
        table.add_row(
            d.key,
            d.type.value,
            "yes" if d.pii else "",
            escape(", ".join(d.precedence or ())),
            escape(d.description),
        )
    out.print(table)


@traits_cli.command("remove")
def traits_remove(
    key: Annotated[str, typer.Argument(help="The trait key whose declaration to remove.")],
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Removes a trait's declaration; stored values and history stay."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    if not _on_database(settings, lambda db: ProfileStore(db).delete_catalog_entry(key)):
        err.print(f"[red]error:[/red] no declared trait is named {escape(key)}.")
        raise typer.Exit(1)
    out.print(f"Removed the declaration of {escape(key)}.")


# --- sources and quarantine (app/ingest) ---------------------------------------


@sources_cli.command("create")
def sources_create(
    name: Annotated[
        str,
        typer.Argument(
            help="The source's name: 1 to 64 lowercase letters, digits, '_' or '-', "
            "starting with a letter (e.g. `web`, `pos-eu`)."
        ),
    ],
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Creates a source and prints its write key, the last line, once."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    try:
        check_source_name(name)
    except InvalidSourceName as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(2) from None
    try:
        created, write_key = _on_database(settings, lambda db: SourceStore(db).create(name))
    except SourceExists as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
    out.print(f"Created source {escape(created.name)}.")
    out.print(
        "Its write key follows: send it as the HTTP Basic username (empty password) or as "
        "`writeKey`. Store it now: it will not be shown again."
    )
    out.print(write_key, markup=False, highlight=False, soft_wrap=True)


@sources_cli.command("list")
def sources_list(
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Lists sources with their dates; never write keys."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    sources = _on_database(settings, lambda db: SourceStore(db).list())
    table = Table(title=f"sources in {escape(settings.database)}")
    table.add_column("name", no_wrap=True)
    table.add_column("created")
    table.add_column("revoked")
    for source in sources:
        table.add_row(source.name, _when(source.created_at), _when(source.revoked_at))
    out.print(table)


@sources_cli.command("revoke")
def sources_revoke(
    name: Annotated[str, typer.Argument(help="The name of the source whose write key to revoke.")],
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Revokes a source's write key; a running service refuses it within 30 seconds."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    if not _on_database(settings, lambda db: SourceStore(db).revoke(name)):
        err.print(f"[red]error:[/red] no source is named {escape(name)}.")
        raise typer.Exit(1)
    out.print(
        f"Revoked {escape(name)}. Running services refuse its write key within 30 seconds, "
        "as they cache keys that long."
    )


@quarantine_cli.command("list")
def quarantine_list(
    limit: Annotated[
        int,
        typer.Option("--limit", min=1, max=10_000, help="Most events to show, oldest first."),
    ] = 50,
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Lists quarantined events with the reason each was refused."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    rows = _on_database(
        settings, lambda db: IngestService.from_settings(db, settings).quarantined(limit=limit)
    )
    table = Table(title=f"quarantine in {escape(settings.database)}")
    table.add_column("id", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("received", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for row in rows:
        table.add_row(row.id, row.source, _when(row.received_at), escape(row.reason))
    out.print(table)


@quarantine_cli.command("replay")
def quarantine_replay(
    ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="Ids of quarantined events, as `kindred quarantine list` shows them.",
            show_default=False,
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every quarantined event.")] = False,
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Re-validates quarantined events: valid ones join the event log, others stay."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    if bool(ids) == all_:
        err.print("[red]error:[/red] name quarantined event ids, or pass --all (not both).")
        raise typer.Exit(2)
    summary = _on_database(
        settings,
        lambda db: IngestService.from_settings(db, settings).replay(None if all_ else ids),
    )
    out.print(
        f"Replayed {summary.replayed}: {summary.stored} stored, {summary.duplicates} already "
        f"stored, {summary.still_invalid} still invalid."
    )
    if summary.not_found:
        err.print(f"[red]error:[/red] {summary.not_found} id(s) are not in quarantine.")
        raise typer.Exit(1)


# --- demo data (app/demo.py) -------------------------------------------------------------


@cli.command("demo")
def demo_command(
    people: Annotated[
        int, typer.Option(min=1, max=100_000, help="How many people (customer records).")
    ] = 2_000,
    days: Annotated[int, typer.Option(min=1, max=3_650, help="Days of history, ending now.")] = 90,
    seed: Annotated[
        int, typer.Option(help="The same seed gives the same people, events and message ids.")
    ] = 1,
    url: Annotated[
        str | None,
        typer.Option(
            help="Base URL of the running Kindred (default: KINDRED_HOST and KINDRED_PORT, "
            "http://127.0.0.1:8000).",
            show_default=False,
        ),
    ] = None,
    write_key: Annotated[
        str | None,
        typer.Option(
            "--write-key",
            help="Send with this source's write key. Without it, a source `demo` (or "
            "`demo-2`, … if taken) is created in the database.",
            show_default=False,
        ),
    ] = None,
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Sends a seeded e-commerce history through the ingest API, as a shop's Segment SDK would.

    Timestamps are offsets back from now; see app/demo.py for what the history holds.
    """
    from app import demo as demo_data

    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)
    base = (url or demo_data.server_url(settings)).rstrip("/")
    if not demo_data.is_ready(base):
        err.print(
            f"[red]error:[/red] no ready Kindred answers at {escape(base)}: start it with "
            "`make run` or `kindred serve`, or pass --url."
        )
        raise typer.Exit(1)
    if write_key is None:
        source, write_key = _on_database(settings, demo_data.create_source)
        out.print(f"Created source {escape(source)} for the demo events.")
    demo = demo_data.generate(seed=seed, people=people, days=days, now=datetime.now(UTC))
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as progress:
        task = progress.add_task("Sending events", total=len(demo.calls))
        try:
            sent = demo_data.send(
                demo.calls,
                url=base,
                write_key=write_key,
                progress=lambda done: progress.update(task, completed=done),
            )
        except demo_data.DemoError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from None
    table = Table(title=f"demo sent to {escape(base)}", show_header=False)
    table.add_row("people", f"{len(demo.people):,}")
    table.add_row("  signed up", f"{sum(p.user_id is not None for p in demo.people):,}")
    table.add_row("  on two devices", f"{len(demo.two_device_people()):,}")
    table.add_row("  typo duplicates", f"{len(demo.duplicates):,}")
    table.add_row("events sent", f"{sent.events:,}")
    table.add_row("time", f"{sent.seconds:.1f} s ({sent.events / max(sent.seconds, 1e-9):,.0f}/s)")
    out.print(table)
    out.print(
        "The profile builder applies the events in the background; "
        "`kindred db status` shows the profiles arrive."
    )


@cli.command()
def version() -> None:
    """Prints Kindred's version."""
    out.print(__version__)


def main() -> None:
    """Entry point of the `kindred` console script."""
    # Registers its commands on `cli`; a module of its own keeps this one readable.
    import app.identity_cli  # noqa: F401
    import app.scores_cli  # noqa: F401
    import app.segments_cli  # noqa: F401

    sys.exit(cli())
