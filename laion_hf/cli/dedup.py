"""``laion-hf dedup``: exact and near-duplicate removal across every shard of a run."""

from __future__ import annotations

import time
from typing import Optional

import typer

from laion_hf.cli.app import RAY_ADDRESS_HELP, RUNNER_HELP, app, check_output_dir, console, runner_for, stats_table
from laion_hf.io.atomic import join
from laion_hf.stages.duplicates import DEFAULT_MAX_DISTANCE, DEFAULT_MAX_EMBEDDING_DISTANCE
from laion_hf.steps.dedup import REPORT_FILE, dedup_shards


@app.command("dedup")
def dedup_command(
    input_dir: str = typer.Argument(..., metavar="SHARDS", help="Directory of img2dataset-layout shards (tar + parquet)."),
    output_dir: str = typer.Argument(..., metavar="OUTPUT", help="Where deduplicated shards go (removed rows in NNNNN_removed.parquet)."),
    max_distance: int = typer.Option(DEFAULT_MAX_DISTANCE, "--max-distance", min=0, max=31, help="pHash bits (of 64) within which two images are near-duplicates."),
    exact_only: bool = typer.Option(False, "--exact-only", help="No pHash pass: only the LAION hash of (url, caption) (and --embeddings if given)."),
    embeddings: Optional[str] = typer.Option(None, "--embeddings", help="clip-retrieval folder (img_emb/ + metadata/, as `laion-hf filter` saves it): also remove near-duplicate CLIP image embeddings."),
    max_embedding_distance: int = typer.Option(DEFAULT_MAX_EMBEDDING_DISTANCE, "--max-embedding-distance", min=0, max=31, help="SimHash bits (of 64) within which two embeddings are near-duplicates."),
    workers: int = typer.Option(1, "--workers", min=1, help="Shards processed in parallel."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per batch."),
    runner: str = typer.Option("local", "--runner", help=RUNNER_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
) -> None:
    """Remove duplicates across the whole run: the first row by (shard, key) is kept, the others name it in duplicate_of."""
    check_output_dir(output_dir)
    started = time.perf_counter()
    report = dedup_shards(
        input_dir,
        output_dir,
        max_distance=None if exact_only else max_distance,
        embeddings=embeddings,
        max_embedding_distance=max_embedding_distance,
        workers=workers,
        batch_size=batch_size,
        runner=runner_for(runner, workers, ray_address, batch_size=batch_size),
    )
    console.print(stats_table("dedup", [report.stats.timed(time.perf_counter() - started)]))  # the whole step
    console.print(f"rows in = kept + removed: checked ({report.stats.rows_in:,} = {report.stats.kept:,} + "
                  f"{report.stats.removed:,}); report: {join(output_dir, REPORT_FILE)}")
