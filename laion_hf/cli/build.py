"""``laion-hf build``: run a recipe end to end (see :mod:`laion_hf.build`)."""

from __future__ import annotations

import typer

from laion_hf.build import Build, BuildOptions, BuildReport
from laion_hf.cli.app import app, check_output_dir, console, stats_table
from laion_hf.core.errors import UserError
from laion_hf.io.removal_lists import parse_spec
from laion_hf.recipes import load_recipe, parse_override


def print_build_report(report: BuildReport, title: str) -> None:
    """The per-stage table, rows per config and where the Hub folder and card are."""
    console.print(stats_table(title, report.stages))
    for name, config in report.configs.items():
        console.print(f"config [bold]{name}[/]: {config['rows']:,} rows ({config['dir']})")
    if report.hub_folder:
        console.print(f"Hub folder: {report.hub_folder}")
    if report.card:
        console.print(f"dataset card: {report.card}")


@app.command("build")
def build_command(
    paths: list[str] = typer.Argument(..., help="INPUTS... OUTPUT: WAT files / globs / wat.paths listings (or the --start-at step's input), then the output directory."),
    recipe: str = typer.Option(..., "--recipe", help="A built-in recipe (laion400m, laion5b, relaion5b, demo) or a recipe YAML file."),
    runner: str = typer.Option("local", "--runner", help="local (this machine) or ray (a Ray cluster, or Ray on this machine)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (local) or actors per stage / CPUs (ray)."),
    ray_address: str = typer.Option(None, "--ray-address", help="Connect to a running Ray cluster instead of starting Ray locally."),
    gpus: float = typer.Option(0.0, "--gpus-per-model-actor", help="GPUs each filter / score actor reserves (ray)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a recipe value, e.g. steps.filter.threshold=0.3 (repeatable)."),
    remove: list[str] = typer.Option([], "--remove", help="A removal list KIND=FILE applied to every config (repeatable)."),
    start_at: str = typer.Option(None, "--start-at", help="First step: a step of the recipe (extract, download, filter, score, dedup) or configs; INPUTS are that step's input."),
    allow_private_network: bool = typer.Option(False, "--allow-private-network", help="Let the download step fetch from loopback / private addresses."),
    hub_format: str = typer.Option("webdataset", "--format", help="Hub folder format: webdataset or parquet."),
    repo_id: str = typer.Option(None, "--repo-id", help="The Hub repo the card's loading example names."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
) -> None:
    """Build a dataset with a recipe: its steps (extract -> download -> filter -> score -> dedup), configs, Hub folder + card."""
    if len(paths) < 2:
        raise UserError("build needs at least one INPUT and an OUTPUT directory")
    *inputs, output = paths
    check_output_dir(output)
    loaded = load_recipe(recipe, dict(parse_override(o) for o in overrides))
    options = BuildOptions(
        inputs=inputs,
        output=output,
        runner=runner,
        workers=workers,
        ray_address=ray_address,
        gpus_per_model_actor=gpus,
        start_at=start_at,
        removals=tuple(parse_spec(spec) for spec in remove),
        allow_private_network=allow_private_network,
        batch_size=batch_size,
        hub_format=hub_format,
        repo_id=repo_id,
    )
    report = Build(loaded, options).run()
    print_build_report(report, f"build: {loaded.name} {loaded.version} ({runner})")
