"""``laion-hf oig build RECIPE.yaml OUTPUT``: an OIG-style instruction dataset in Hub layout."""

from __future__ import annotations

from pathlib import Path

import typer

from laion_hf.cli.app import app, check_output_dir, console, stats_table
from laion_hf.runners.local import progress_bar

oig_app = typer.Typer(name="oig", help="Build OIG-style instruction datasets.", no_args_is_help=True)
app.add_typer(oig_app, name="oig")


@oig_app.command("build")
def build_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML (constituents, sources, templates, thresholds)."),
    output: str = typer.Argument(..., help="Output folder (Hub layout: one config per constituent, all, moderation)."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Processes for templating, PII, quality, decontamination, dedup signatures and dedup partitions."),
) -> None:
    """Build every config of RECIPE into OUTPUT; an interrupted build resumes."""
    check_output_dir(output)
    from oig.build import build

    with progress_bar() as progress:
        tasks: dict[str, int] = {}

        def on_rows(name: str, rows: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=None)
            progress.advance(tasks[name], rows)

        report = build(recipe, output, workers=workers, on_rows=on_rows)
        for task in tasks.values():
            progress.update(task, total=progress.tasks[task].completed)
    console.print(stats_table("oig build: conversations per config", [r.overall() for r in report.all_reports()]))
    console.print(stats_table("oig build: per stage", report.stage_totals()))
    pii = {}
    for r in report.all_reports():
        for kind, count in r.pii.items():
            pii[kind] = pii.get(kind, 0) + count
    console.print(f"PII scrubbed: {', '.join(f'{k}={v:,}' for k, v in sorted(pii.items()) if v) or 'none'}")
    console.print(f"Wrote {output} (README.md with configs: all, {', '.join(r.name for r in report.all_reports())})")
    console.print(f"Removed rows with their text: {output}/.audit/ (local only; `laion-hf push` does not upload it)")
