"""``laion-hf score``: punsafe, pwatermark and aesthetic columns for image shards."""

from __future__ import annotations

from typing import Optional

import typer

from laion_hf.cli.app import RAY_ADDRESS_HELP, RUNNER_HELP, app, check_output_dir, console, runner_for, stats_table
from laion_hf.core.stage import StageStats

SCORE_COLUMNS = ("punsafe", "pwatermark", "aesthetic")  # laion_hf.stages.score, without importing torch for --help
_HEAD_HELP = (
    "'laion' (LAION's published checkpoint, looked up under its published name in --models-dir), "
    "'tiny' (the shipped head of the synthetic demo domain), a checkpoint path, or 'none' to skip."
)


def _pairs(specs: list[str], option: str) -> dict[str, str]:
    """COLUMN=VALUE pairs (e.g. punsafe=0.45) as a dict, checked against the score columns."""
    pairs = {}
    for spec in specs:
        column, _, value = spec.partition("=")
        if column not in SCORE_COLUMNS or not value:
            raise typer.BadParameter(f"{spec!r}: expected COLUMN=VALUE with COLUMN one of {', '.join(SCORE_COLUMNS)}", param_hint=option)
        pairs[column] = value
    return pairs


def _limits(specs: list[str], option: str) -> dict[str, float]:
    limits = {}
    for column, value in _pairs(specs, option).items():
        try:
            limits[column] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{column}={value}: {value!r} is not a number", param_hint=option) from None
    return limits


def _head(spec: str) -> str | None:
    return None if spec.lower() == "none" else spec


@app.command("score")
def score_command(
    input_dir: str = typer.Argument(..., metavar="SHARDS", help="Directory of img2dataset-layout shards (NNNNN.tar + NNNNN.parquet)."),
    output_dir: str = typer.Argument(..., metavar="OUTPUT", help="Where the scored shards go (same layout, score columns added)."),
    nsfw: str = typer.Option("laion", "--nsfw", help=f"punsafe head: {_HEAD_HELP} LAION's SavedModel zip/dir works."),
    watermark: str = typer.Option("laion", "--watermark", help=f"pwatermark model: {_HEAD_HELP} LAION's watermark_model_v1.pt works."),
    aesthetic: str = typer.Option("laion", "--aesthetic", help=f"aesthetic head: {_HEAD_HELP} LAION's v1/v2 .pth work."),
    clip: str = typer.Option("ViT-L-14-quickgelu", "--clip", help="CLIP whose image embeddings the punsafe/aesthetic heads read (LAION's: OpenAI ViT-L/14)."),
    clip_pretrained: str = typer.Option("default", "--clip-pretrained", help="Weights tag or file for --clip. 'default': openai for OpenAI's architectures, the shipped weights for laion-hf-tiny."),
    models_dir: Optional[str] = typer.Option(None, "--models-dir", help="Folder of LAION's published heads for 'laion' (default: $LAION_HF_MODELS or ~/.cache/laion_hf/models)."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Folder holding the --clip tag's weights (a Hugging Face cache, or OpenAI's ViT-L-14.pt)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute score columns the input already has (kept otherwise)."),
    output_column: list[str] = typer.Option([], "--output-column", help="SCORE=NAME: write a score under another column name (keeps the input's own). Repeatable."),
    drop_above: list[str] = typer.Option([], "--drop-above", help="COLUMN=LIMIT: mark rows above it (e.g. punsafe=0.45). Repeatable."),
    drop_below: list[str] = typer.Option([], "--drop-below", help="COLUMN=LIMIT: mark rows below it (e.g. aesthetic=5). Repeatable."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Samples per streamed batch."),
    workers: int = typer.Option(1, "--workers", min=1, help="Shards scored in parallel (local processes or Ray actors)."),
    runner: str = typer.Option("local", "--runner", help=RUNNER_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
) -> None:
    """Add punsafe / pwatermark / aesthetic to every sample (keeping scores the input has); optionally drop by limits."""
    check_output_dir(output_dir)
    from laion_hf.steps.score import score_shards

    report = score_shards(
        input_dir,
        output_dir,
        nsfw=_head(nsfw),
        aesthetic=_head(aesthetic),
        watermark=_head(watermark),
        clip=clip,
        clip_pretrained=clip_pretrained,
        overwrite=overwrite,
        columns=_pairs(output_column, "--output-column"),
        models_dir=models_dir,
        cache_dir=cache_dir,
        drop_above=_limits(drop_above, "--drop-above"),
        drop_below=_limits(drop_below, "--drop-below"),
        batch_size=batch_size,
        workers=workers,
        runner=runner_for(runner, workers, ray_address, batch_size=batch_size),
    )
    console.print(stats_table(f"score: {report['shards']} shard(s)", [StageStats.from_dict(s) for s in report["stages"]]))
    for score, outcome in report["columns"].items():
        done = ", ".join(f"{what} in {count} shard(s)" for what in ("computed", "kept") if (count := outcome[what]))
        console.print(f"{outcome['column']}: {done}" + (" (the input's own values)" if outcome["kept"] else ""))
    console.print(f"scored shards: {report['output_dir']}")
