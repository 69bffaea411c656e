"""The `kindred scores` commands: recompute RFM scores and behavioural clusters now."""

from datetime import UTC, datetime
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
    cli,
    err,
    load_settings,
    out,
    progress_bar,
    summary_table,
)
from app.mongo import Document
from profiles.scores import clusters as clustering
from profiles.scores.clusters import NotEnoughProfiles
from profiles.scores.service import ClusterSummary, RfmSummary, ScoreService
from profiles.scores.store import ScoreStore

scores_cli = typer.Typer(
    help="Recompute RFM scores and behavioural clusters; both are stored on profiles under "
    "`computed`.",
    no_args_is_help=True,
)
cli.add_typer(scores_cli, name="scores")


@scores_cli.command("rfm")
def scores_rfm(
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Scores recency, frequency and monetary value 1–5 and names each profile's RFM group."""
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)

    async def run(db: AsyncDatabase[Document]) -> RfmSummary:
        with progress_bar() as progress:
            return await ScoreService(ScoreStore(db)).recompute_rfm(
                now=datetime.now(UTC), progress=progress
            )

    summary = _on_database(settings, run)
    table = Table(title="RFM groups (live profiles)")
    table.add_column("group", no_wrap=True)
    table.add_column("profiles", justify="right")
    for group, count in summary.groups.items():
        table.add_row(group.value, f"{count:,}")
    out.print(table)
    out.print(
        summary_table(
            "rfm",
            [
                ("profiles scored", f"{summary.scored:,}"),
                ("profiles without orders", f"{summary.no_purchases:,}"),
                ("scored profiles that changed group", f"{summary.changed:,}"),
                ("seconds", f"{summary.seconds:.1f}"),
            ],
        )
    )


@scores_cli.command("clusters")
def scores_clusters(
    k: Annotated[
        int | None,
        typer.Option(
            "--k",
            min=2,
            help="Number of clusters; without it k is chosen by silhouette.",
            show_default=False,
        ),
    ] = None,
    k_min: Annotated[
        int | None,
        typer.Option(
            "--k-min",
            min=2,
            help=f"Smallest k to try (default {clustering.DEFAULT_K_MIN}).",
            show_default=False,
        ),
    ] = None,
    k_max: Annotated[
        int | None,
        typer.Option(
            "--k-max",
            min=2,
            max=50,
            help=f"Largest k to try (default {clustering.DEFAULT_K_MAX}).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Random seed: the same seed, the same clusters.")
    ] = clustering.DEFAULT_SEED,
    categories: Annotated[
        int,
        typer.Option(
            "--categories",
            min=0,
            max=50,
            help="How many of the most viewed product categories become features.",
        ),
    ] = clustering.DEFAULT_CATEGORIES,
    mongodb_uri: MongoUriOption = None,
    data_dir: DataDirOption = None,
    database: DatabaseOption = None,
) -> None:
    """Clusters live profiles by behaviour (k-means) and labels each one c1…ck."""
    if k is not None and (k_min is not None or k_max is not None):
        raise typer.BadParameter("give --k, or a --k-min/--k-max range, not both", param_hint="--k")
    low = clustering.DEFAULT_K_MIN if k_min is None else k_min
    high = clustering.DEFAULT_K_MAX if k_max is None else k_max
    if k is None and low > high:
        raise typer.BadParameter(f"--k-min {low} is above --k-max {high}", param_hint="--k-min")
    settings = load_settings(mongodb_uri=mongodb_uri, data_dir=data_dir, database=database)

    async def run(db: AsyncDatabase[Document]) -> ClusterSummary | NotEnoughProfiles:
        with progress_bar() as progress:
            try:
                return await ScoreService(ScoreStore(db)).recompute_clusters(
                    now=datetime.now(UTC),
                    k=k,
                    k_min=low,
                    k_max=high,
                    seed=seed,
                    categories=categories,
                    progress=progress,
                )
            except NotEnoughProfiles as exc:
                return exc

    summary = _on_database(settings, run)
    if isinstance(summary, NotEnoughProfiles):
        err.print(f"[red]error:[/red] {escape(summary.message)}")
        raise typer.Exit(1)
    table = Table(title=f"clusters (run {summary.run_id})")
    table.add_column("label", no_wrap=True)
    table.add_column("profiles", justify="right")
    table.add_column("description")
    for cluster in summary.clusters:
        table.add_row(cluster.label, f"{cluster.size:,}", escape(cluster.description))
    out.print(table)
    totals = Table(title="clustering")
    totals.add_column("", no_wrap=True)
    totals.add_column("", justify="right")
    rows = [
        ("profiles clustered", f"{summary.profiles:,}"),
        ("k", str(summary.k)),
        ("silhouette", _score(summary.silhouette)),
    ]
    if len(summary.silhouettes) > 1:
        rows += [(f"  silhouette at k={n}", _score(s)) for n, s in summary.silhouettes.items()]
    rows += [("seed", str(seed)), ("seconds", f"{summary.seconds:.1f}")]
    for label, value in rows:
        totals.add_row(label, value)
    out.print(totals)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
