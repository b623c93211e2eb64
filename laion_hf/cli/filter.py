"""``laion-hf filter``: CLIP-filter image shards (see :mod:`laion_hf.stages.filter`)."""

from __future__ import annotations

import typer

from laion_hf.cli.app import app, check_output_dir, console, stats_table


@app.command("filter")
def filter_command(
    shards: str = typer.Argument(..., help="Directory of img2dataset-layout shards (NNNNN.tar + NNNNN.parquet)."),
    output: str = typer.Argument(..., help="Output directory: kept shards, NNNNN_removed.parquet, img_emb/ text_emb/ metadata/."),
    model: str = typer.Option("laion-hf-tiny", "--model", help="open_clip model name (laion-hf-tiny, ViT-B-32, ViT-L-14, hf-hub:..., local-dir:...)."),
    pretrained: str = typer.Option(None, "--pretrained", help="open_clip pretrained tag (e.g. openai) or a local checkpoint file."),
    threshold: float = typer.Option(None, "--threshold", help="Keep similarity >= this (English / all rows). Default: the tiny model's calibrated value."),
    multilingual_threshold: float = typer.Option(None, "--multilingual-threshold", help="Threshold for non-English rows (LAION-5B: 0.26 with ViT-B/32). Default: --threshold."),
    multilingual: str = typer.Option("default", "--multilingual", help="Text encoder for non-English captions: 'default' (the one that goes with --model), 'none', a sentence-transformers folder or Hub id."),
    workers: int = typer.Option(2, "--workers", min=1, help="Image-decoding threads (overlapped with the forward pass)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cuda."),
    precision: str = typer.Option("fp32", "--precision", help="open_clip precision: fp32, bf16, fp16, amp."),
    embeddings: bool = typer.Option(True, "--embeddings/--no-embeddings", help="Save clip-retrieval style embeddings of kept samples."),
) -> None:
    """Keep image-text pairs whose CLIP similarity reaches the threshold; save their embeddings."""
    check_output_dir(output)
    from laion_hf.stages.filter import filter_shards  # imports torch: only for this command

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
        save_embeddings=embeddings,
    )
    console.print(stats_table(f"filter: {model}", report.stages))
    thresholds = f"threshold {report.threshold}"
    if report.multilingual_threshold is not None:
        thresholds += f", non-English {report.multilingual_threshold} (multilingual encoder)"
    console.print(f"{report.kept:,} of {report.rows_in:,} samples kept ({thresholds}) -> {output}")
    for path, digest in report.checksums.items():
        console.print(f"sha256 {digest}  {path}", highlight=False)
