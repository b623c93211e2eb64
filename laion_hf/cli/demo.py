"""``laion-hf demo`` (interim): generate a sample LAION copy, clean it to research and research-safe.

The build engineer replaces this with the full pipeline demo; the clean half
stays available as :func:`laion_hf.demo.clean_sample_copy`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from laion_hf.cli.app import app, console
from laion_hf.cli.clean import print_report
from laion_hf.demo import clean_sample_copy, generate_sample_copy


@app.command("demo")
def demo_command(
    output: Path = typer.Option(Path("demo-output"), "--output", help="Where the sample copy and results go."),
    workers: int = typer.Option(2, "--workers", min=1),
) -> None:
    """Generate a sample LAION copy (metadata + img2dataset download + removal lists) and clean it."""
    copy = generate_sample_copy(output / "sample-copy")
    console.print(f"sample copy: {copy.metadata_dir} (LAION-5B joined metadata), {copy.download_dir} (img2dataset download)")
    clean_sample_copy(
        copy,
        output,
        workers=workers,
        on_report=lambda variant, part, report: print_report(report, f"{variant} / {part}"),
    )
    console.print(f"results: {output / 'research'} and {output / 'research-safe'} (each with metadata/ and download/)")
