"""``laion-hf extract``: Common Crawl WAT files -> deduplicated image/text candidate shards."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from laion_hf.cli.app import RAY_ADDRESS_HELP, RUNNER_HELP, app, check_output_dir, console, runner_for, stats_table
from laion_hf.core.stage import StageStats
from laion_hf.extract.extract import COMMON_CRAWL_PREFIX, REPORT_FILE
from laion_hf.io.atomic import join
from laion_hf.steps.extract import ExtractReport, extract


def malformed_table(report: ExtractReport) -> Table:
    """Damaged records per file and reason (first offset shown; all are listed in the stats file)."""
    table = Table(title="extract: malformed records (skipped)")
    for column in ("file", "reason", "count", "first offset"):
        table.add_column(column, justify="right" if column in ("count", "first offset") else "left")
    for name, record in report.files.items():
        for reason, count in record["malformed"].items():
            first = next((m["offset"] for m in record["malformed_records"] if m["reason"] == reason), "-")
            table.add_row(name, reason, f"{count:,}", str(first))
    return table


@app.command("extract")
def extract_command(
    paths: list[str] = typer.Argument(
        ...,
        metavar="INPUTS... OUTPUT",
        help="WAT files (.warc.wat.gz paths, globs, fsspec URLs or a wat.paths(.gz) listing), then the output directory.",
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="WAT files processed in parallel (one process each)."),
    listing_prefix: str = typer.Option(COMMON_CRAWL_PREFIX, "--listing-prefix", help="Prefix for the relative paths of a wat.paths listing."),
    global_dedup: bool = typer.Option(True, "--global-dedup/--no-global-dedup", help="Drop pairs repeated across files (first file wins)."),
    language: bool = typer.Option(True, "--language/--no-language", help="Detect the caption language (ISO 639-1, '' when unsure); off leaves it null."),
    runner: str = typer.Option("local", "--runner", help=RUNNER_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
) -> None:
    """Extract LAION image/alt-text candidates (url, caption, page_url, language, license, hash) from WAT files."""
    if len(paths) < 2:
        raise typer.BadParameter("give at least one input and the output directory", param_hint="INPUTS... OUTPUT")
    *inputs, output_dir = paths
    check_output_dir(output_dir)
    report = extract(inputs, output_dir, workers=workers, global_dedup=global_dedup, detect_language=language,
                     runner=runner_for(runner, workers, ray_address))
    rows = [StageStats.from_dict({**record, "stage": name}) for name, record in report.files.items()]
    console.print(stats_table("extract: IMG@/src links per file", [*rows, report.total]))
    if report.malformed:
        console.print(malformed_table(report))
    console.print(
        f"{report.records:,} records, {report.response_pages:,} response pages, "
        f"{report.total.kept:,} pairs kept in {len(report.shards)} shards; stats: {join(output_dir, REPORT_FILE)}"
    )
