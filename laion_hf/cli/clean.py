"""``laion-hf clean`` and ``laion-hf verify-clean``: the Re-LAION migration of an existing copy."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from laion_hf.clean import KINDS, REPORT_NAME, CleanOptions, CleanReport, clean_copy, parse_spec, verify_copy
from laion_hf.cli.app import app, check_output_dir, console, stats_table
from laion_hf.io.atomic import join

_REMOVE_HELP = f"KIND=FILE, repeatable. KIND: {', '.join(KINDS)}. FILE: text (one value a line), CSV or parquet."


def reason_table(title: str, report: CleanReport) -> Table:
    """Removed rows per reason, with the share of all input rows."""
    total = report.total
    table = Table(title=title)
    table.add_column("reason")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    for reason, count in sorted(report.by_reason.items(), key=lambda item: -item[1]):
        table.add_row(reason, f"{count:,}", f"{count / max(total.rows_in, 1):.2%}")
    table.add_row("[bold]kept[/]", f"{total.kept:,}", f"{total.kept / max(total.rows_in, 1):.2%}")
    return table


def print_report(report: CleanReport, title: str = "clean") -> None:
    """The per-shard and per-reason tables, the image-hash source, and where the report is."""
    console.print(stats_table(f"{title}: per shard", [*report.shard_stats, report.total]))
    console.print(reason_table(f"{title}: removed by reason", report))
    for algorithm, sources in report.image_hash_sources.items():
        console.print(f"image {algorithm} digests: {'; '.join(sources)}")
    for note in report.notes:
        console.print(note)
    console.print(f"rows in = kept + removed: checked ({report.total.rows_in:,} = {report.total.kept:,} + "
                  f"{report.total.removed:,}); report: {join(report.output_dir, REPORT_NAME)}")


@app.command("clean")
def clean_command(
    input_dir: str = typer.Argument(..., metavar="INPUT", help="Directory (or fsspec URL) of parquet shards, tars beside them optional."),
    output_dir: str = typer.Argument(..., metavar="OUTPUT", help="Where the cleaned copy goes (same layout)."),
    remove: list[str] = typer.Option([], "--remove", help=_REMOVE_HELP),
    keep_reference: Optional[str] = typer.Option(None, "--keep-reference", help="Re-LAION-style parquet set: keep only rows whose LAION hash of (url, caption) is in it."),
    variant: Optional[str] = typer.Option(None, "--variant", help="research (punsafe > 0.95 removed) or research-safe (punsafe > 0.45)."),
    punsafe_threshold: Optional[float] = typer.Option(None, "--punsafe-threshold", help="Override the variant's punsafe threshold."),
    keyword_file: Optional[str] = typer.Option(None, "--keyword-file", help="Remove rows whose caption holds one of these words (one a line)."),
    metadata: Optional[str] = typer.Option(None, "--metadata", help="LAION metadata the img2dataset download in INPUT came from (punsafe looked up by LAION hash)."),
    metadata_output: Optional[str] = typer.Option(None, "--metadata-output", help="Also clean --metadata into this directory: the same rules, and rows whose image an image list removed from the download go too."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Count and skip invalid list values instead of refusing to start."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Shards cleaned in parallel (default: one per two cores; each also writes on a second thread)."),
    batch_size: int = typer.Option(65536, "--batch-size", min=1, help="Rows per streamed batch."),
) -> None:
    """Remove listed / flagged samples from an existing LAION copy (metadata parquet and img2dataset tars)."""
    check_output_dir(output_dir)
    options = CleanOptions(
        remove=tuple(parse_spec(spec) for spec in remove),
        keep_reference=keep_reference,
        variant=variant,
        punsafe_threshold=punsafe_threshold,
        keyword_file=keyword_file,
        skip_invalid=skip_invalid,
        metadata=metadata,
        metadata_output=metadata_output,
        batch_size=batch_size,
    )
    report = clean_copy(input_dir, output_dir, options, workers=workers)
    for item in report.removal_lists:
        if item["invalid_skipped"]:
            console.print(f"[yellow]{item['path']}: skipped {item['invalid_skipped']} invalid {item['kind']} value(s)[/]")
    print_report(report)
    if report.metadata is not None:
        print_report(report.metadata, title="clean metadata")


@app.command("verify-clean")
def verify_clean_command(
    output_dir: str = typer.Argument(..., metavar="OUTPUT", help="A cleaned copy."),
    remove: list[str] = typer.Option([], "--remove", help=_REMOVE_HELP),
    variant: Optional[str] = typer.Option(None, "--variant", help="Also check no row has punsafe above the variant's threshold."),
    punsafe_threshold: Optional[float] = typer.Option(None, "--punsafe-threshold", help="Override the variant's punsafe threshold."),
    keyword_file: Optional[str] = typer.Option(None, "--keyword-file", help="Also check no caption holds one of these words."),
    metadata: Optional[str] = typer.Option(None, "--metadata", help="LAION metadata a cleaned download came from (its punsafe, by LAION hash)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Count and skip invalid list values."),
) -> None:
    """Re-read OUTPUT and prove that nothing the rules remove remains (exit 1 and a list if something does).

    Checks the removal lists, and with --variant / --keyword-file the punsafe and keyword rules; every
    downloaded row must have its sample in the tar (a tar cut short is reported); an unreadable tar or
    parquet is an error naming the file (exit 2).
    """
    result = verify_copy(
        output_dir, [parse_spec(spec) for spec in remove], skip_invalid=skip_invalid, variant=variant,
        punsafe_threshold=punsafe_threshold, keyword_file=keyword_file, metadata=metadata,
    )
    if result.violations:
        for violation in result.violations:
            console.print(str(violation), highlight=False, markup=False)
        console.print(f"[bold red]{len(result.violations)} removed value(s) or missing sample(s) in {output_dir}[/]")
        raise typer.Exit(1)
    console.print(f"clean: {result.rows:,} rows and {result.samples:,} tar samples checked, no removed value remains")
