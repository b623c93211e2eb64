"""``laion-hf score``: punsafe, pwatermark and aesthetic columns for image shards."""

from __future__ import annotations

from typing import Optional

import typer

from laion_hf.cli.app import app, check_output_dir, console, stats_table
from laion_hf.stages.base import StageStats

SCORE_COLUMNS = ("punsafe", "pwatermark", "aesthetic")  # laion_hf.stages.score, without importing torch for --help
_HEAD_HELP = "'tiny' (shipped), a checkpoint path, or 'none' to skip."


def _limits(specs: list[str], option: str) -> dict[str, float]:
    """COLUMN=VALUE pairs (e.g. punsafe=0.45) as a dict, checked against the score columns."""
    limits = {}
    for spec in specs:
        column, _, value = spec.partition("=")
        if column not in SCORE_COLUMNS or not value:
            raise typer.BadParameter(f"{spec!r}: expected COLUMN=VALUE with COLUMN one of {', '.join(SCORE_COLUMNS)}", param_hint=option)
        try:
            limits[column] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{spec!r}: {value!r} is not a number", param_hint=option) from None
    return limits


def _head(spec: str) -> str | None:
    return None if spec.lower() == "none" else spec


@app.command("score")
def score_command(
    input_dir: str = typer.Argument(..., metavar="SHARDS", help="Directory of img2dataset-layout shards (NNNNN.tar + NNNNN.parquet)."),
    output_dir: str = typer.Argument(..., metavar="OUTPUT", help="Where the scored shards go (same layout, score columns added)."),
    nsfw: str = typer.Option("tiny", "--nsfw", help=f"punsafe head: {_HEAD_HELP} LAION's SavedModel zip/dir works."),
    watermark: str = typer.Option("tiny", "--watermark", help=f"pwatermark model: {_HEAD_HELP} LAION's watermark_model_v1.pt works."),
    aesthetic: str = typer.Option("tiny", "--aesthetic", help=f"aesthetic head: {_HEAD_HELP} LAION's v1/v2 .pth work."),
    clip: str = typer.Option("laion-hf-tiny", "--clip", help="CLIP for the embedding when the batch carries no image_embedding."),
    clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help="Weights tag or file for --clip."),
    drop_above: list[str] = typer.Option([], "--drop-above", help="COLUMN=LIMIT: mark rows above it (e.g. punsafe=0.45). Repeatable."),
    drop_below: list[str] = typer.Option([], "--drop-below", help="COLUMN=LIMIT: mark rows below it (e.g. aesthetic=5). Repeatable."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per streamed batch."),
    workers: int = typer.Option(1, "--workers", min=1, help="Shards scored in parallel."),
) -> None:
    """Add punsafe / pwatermark / aesthetic to every sample; optionally drop by limits (reasons recorded)."""
    check_output_dir(output_dir)
    from laion_hf.stages.score import score_shards

    report = score_shards(
        input_dir,
        output_dir,
        nsfw=_head(nsfw),
        aesthetic=_head(aesthetic),
        watermark=_head(watermark),
        clip=clip,
        clip_pretrained=clip_pretrained,
        drop_above=_limits(drop_above, "--drop-above"),
        drop_below=_limits(drop_below, "--drop-below"),
        batch_size=batch_size,
        workers=workers,
    )
    console.print(stats_table(f"score: {report['shards']} shard(s)", [StageStats.from_dict(s) for s in report["stages"]]))
    console.print(f"scored shards: {report['output_dir']}")
