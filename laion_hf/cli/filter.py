"""``laion-hf filter``: CLIP-filter image shards (see :mod:`laion_hf.stages.filter`)."""

from __future__ import annotations

from typing import Optional

import typer

from laion_hf.cli.app import RAY_ADDRESS_HELP, RUNNER_HELP, app, check_output_dir, console, runner_for, stats_table

_DEFAULT_MODEL = "ViT-B-32-quickgelu"  # laion_hf.stages.embed.DEFAULT_MODEL, without importing torch for --help


@app.command("filter")
def filter_command(
    shards: str = typer.Argument(..., help="Directory of img2dataset-layout shards (NNNNN.tar + NNNNN.parquet)."),
    output: str = typer.Argument(..., help="Output directory: kept shards, NNNNN_removed.parquet, img_emb/ text_emb/ metadata/."),
    model: str = typer.Option(_DEFAULT_MODEL, "--model", help="open_clip model name. Default: OpenAI's ViT-B/32 as LAION ran it. laion-hf-tiny is the shipped model of the synthetic demo domain."),
    pretrained: str = typer.Option("default", "--pretrained", help="open_clip pretrained tag (read from open_clip's caches) or a local checkpoint file (OpenAI's ViT-B-32.pt, a state dict, safetensors). 'default': openai for OpenAI's architectures, the shipped weights for laion-hf-tiny."),
    cache_dir: str = typer.Option(None, "--cache-dir", help="Folder holding the pretrained tag's weights (a Hugging Face cache, or OpenAI's ViT-B-32.pt)."),
    threshold: float = typer.Option(None, "--threshold", help="Keep similarity >= this (English / all rows). Default: the one published for the weights (0.28 for OpenAI ViT-B/32; laion-hf-tiny's calibrated value); required for other weights."),
    multilingual_threshold: float = typer.Option(None, "--multilingual-threshold", help="Threshold for non-English rows (LAION-5B: 0.26 with ViT-B/32). Default: the published one, else --threshold."),
    multilingual: str = typer.Option("default", "--multilingual", help="Text encoder for non-English captions: 'default' (the one that goes with --model), 'none', a sentence-transformers folder or Hub id."),
    similarity_column: str = typer.Option("similarity", "--similarity-column", help="Column for this model's similarity (and the one filtered on); pick another name to keep the input's own similarity."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a similarity column the input already has (refused otherwise)."),
    fast_decode: bool = typer.Option(False, "--fast-decode", help="Let JPEG decoding downscale large images (faster; changes similarities slightly, see docs/models.md)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Image-decoding threads (overlapped with the forward pass)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cuda."),
    precision: str = typer.Option("fp32", "--precision", help="open_clip precision: fp32, bf16, fp16, amp."),
    embeddings: bool = typer.Option(True, "--embeddings/--no-embeddings", help="Save clip-retrieval style embeddings of kept samples."),
    runner: str = typer.Option("local", "--runner", help=RUNNER_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    ray_actors: int = typer.Option(1, "--ray-actors", min=1, help="Model actors (each with --workers decoding threads) on Ray."),
) -> None:
    """Keep image-text pairs whose CLIP similarity reaches the threshold; save their embeddings."""
    check_output_dir(output)
    from laion_hf.stages.filter import READ_BATCHES
    from laion_hf.steps.filter import filter_shards  # imports torch: only for this command

    choice: str | bool | None = {"default": True, "none": None}.get(multilingual, multilingual)
    report = filter_shards(
        shards,
        output,
        model=model,
        pretrained=pretrained,
        threshold=threshold,
        multilingual=choice,
        multilingual_threshold=multilingual_threshold,
        workers=workers,
        batch_size=batch_size,
        device=device,
        precision=precision,
        cache_dir=cache_dir,
        similarity_column=similarity_column,
        overwrite=overwrite,
        fast_decode=fast_decode,
        save_embeddings=embeddings,
        runner=runner_for(runner, ray_actors, ray_address, batch_size=batch_size * READ_BATCHES),
    )
    console.print(stats_table(f"filter: {report.model}", report.stages))
    thresholds = f"{report.similarity_column} >= {report.threshold}"
    if report.multilingual_threshold is not None:
        thresholds += f", non-English >= {report.multilingual_threshold} (multilingual encoder)"
    console.print(f"{report.kept:,} of {report.rows_in:,} samples kept ({thresholds}; {report.threshold_source}) -> {output}")
    for path, digest in report.checksums.items():
        console.print(f"sha256 {digest}  {path}", highlight=False)
