"""The ``laion-hf`` Typer application and what its commands share (console, tables, errors)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from laion_hf.core.errors import UserError
from laion_hf.core.stage import StageStats

app = typer.Typer(
    name="laion-hf",
    help="Build, clean, publish and load LAION-style datasets and OIG-style instruction sets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


def _print_version(value: bool) -> None:
    if value:
        from laion_hf import __version__

        console.print(f"laion-hf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Show the version."),
) -> None:
    """Build, clean, publish and load LAION-style datasets and OIG-style instruction sets."""


def stats_table(title: str, rows: Iterable[StageStats]) -> Table:
    """A summary table: one row per stage (or shard), in / kept / removed by reason / time."""
    table = Table(title=title)
    for column in ("stage", "in", "kept", "removed", "by reason", "seconds"):
        table.add_column(column, justify="left" if column in ("stage", "by reason") else "right")
    for stats in rows:
        reasons = ", ".join(f"{reason}={count:,}" for reason, count in sorted(stats.dropped.items()))
        table.add_row(
            stats.stage,
            f"{stats.rows_in:,}",
            f"{stats.kept:,}",
            f"{stats.removed:,}",
            reasons or "-",
            f"{stats.seconds:.1f}",
        )
    return table


RUNNER_HELP = "Where the work runs: local (this machine) or ray (Ray actors; --ray-address joins a cluster)."
RAY_ADDRESS_HELP = "A running Ray cluster to join (--runner ray); without it Ray starts on this machine."


def runner_for(kind: str, workers: int, ray_address: str | None, **options):
    """The runner of a single-step command: None for the step's own local default, else what ``--runner`` names."""
    if kind == "local" and ray_address is None:
        return None
    from laion_hf.runners import make_runner

    return make_runner(kind, workers=workers, ray_address=ray_address, **options)


def check_output_dir(output: str | os.PathLike) -> None:
    """Refuse, before any work (model loading, downloads), a local OUTPUT that is a file or cannot be written.

    Checks OUTPUT or, if it does not exist yet, the nearest folder it would be
    created in. fsspec URLs are left to the filesystem.
    """
    if "://" in str(output):
        return
    target = Path(output).absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{existing}: a file, not a folder (OUTPUT {output})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{existing}: not writable (OUTPUT {output})")
