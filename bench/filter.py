"""Benchmark the CLIP filter pipeline against the raw open_clip forward pass, in one run.

For each model (the shipped tiny model; ViT-B-32 with random weights, LAION's
filter architecture at 224x224), alternating over several runs:

* ours: shards in -> filtered shards out (read tar + parquet, decode JPEGs in
  threads, preprocess, image and text towers, similarity, mark, write kept
  samples byte-identical, removed rows and clip-retrieval embeddings);
* raw: ``model.encode_image`` + ``model.encode_text`` on pre-decoded,
  pre-processed image tensors and pre-tokenised captions, same batch size
  (non-English captions through the multilingual student, as in the pipeline).

Model loading is outside both timings. Images/s and the ratio ours/raw are
printed; the goal is >= 0.9x (decoding and I/O hidden behind the forward).

``--fast-decode-only`` measures what the opt-in ``--fast-decode`` (JPEG ``draft``)
does instead: on large real-format files of a real photograph (tests/models/real_images.py:
JPEG, PNG with alpha, CMYK JPEG, WebP, EXIF-rotated JPEG at several sizes), the
similarity with and without it for both models (max and median absolute difference,
per format), and decode + preprocess time per image with and without it.

    .venv/bin/python bench/filter.py [--images 512] [--vit-images 128] [--batch-size 64] [--runs 3]
    .venv/bin/python bench/filter.py --fast-decode-only
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from laion_hf.io.samples import read_sample_batches  # noqa: E402
from laion_hf.io.shards import discover_shards  # noqa: E402
from laion_hf.models.images import decode_image  # noqa: E402
from laion_hf.runners.base import transform  # noqa: E402
from laion_hf.stages.embed import SIMILARITY, ClipEmbed  # noqa: E402
from laion_hf.stages.filter import READ_BATCHES, SimilarityFilter  # noqa: E402
from laion_hf.steps.filter import EmbeddingWriter  # noqa: E402
from laion_hf.testing.synthetic.shards import write_shards  # noqa: E402


def _rates(count: int, times: list[float]) -> str:
    r = sorted(count / t for t in times)
    return f"min {r[0]:,.1f} / median {statistics.median(r):,.1f} / max {r[-1]:,.1f} images/s"


def bench_model(label: str, model: str, images: int, batch_size: int, workers: int, runs: int, workdir: Path,
                multilingual: bool) -> float:
    source = workdir / f"{label}-in"
    write_shards(str(source), shards=2, per_shard=images // 2, languages=("en", "de", "fr") if multilingual
                 else ("en",), size=256, seed=3)
    shards = discover_shards(str(source))
    pretrained = "default" if model == "laion-hf-tiny" else None  # ViT-B-32: random weights (none offline)
    embed = ClipEmbed(model, pretrained=pretrained, multilingual=True if multilingual else None, batch_size=batch_size,
                      workers=workers)
    embed.setup()
    stages = [embed, SimilarityFilter(0.2, 0.2 if multilingual else None)]
    clip = embed.clip

    # Raw: the same images, decoded and preprocessed beforehand; the same captions, tokenised beforehand.
    batches = [b for shard in shards for b in read_sample_batches(shard, batch_size)]
    pixels = [torch.stack([clip.preprocess(decode_image(x)) for x in b["image"].to_pylist()]) for b in batches]
    # Each caption goes to the encoder the pipeline uses for it: English -> CLIP text tower, else the student.
    english = [[lang == "en" or not multilingual for lang in b["language"].to_pylist()] for b in batches]
    tokens = [clip.tokenizer([c for c, e in zip(b["caption"].to_pylist(), en) if e]) for b, en in zip(batches, english)]
    student_tokens = [clip.multilingual.tokenize([c for c, e in zip(b["caption"].to_pylist(), en) if not e])
                      if multilingual and not all(en) else None for b, en in zip(batches, english)]

    @torch.no_grad()
    def raw() -> None:
        for p, t, st in zip(pixels, tokens, student_tokens):
            clip.model.encode_image(p)
            clip.model.encode_text(t)
            if st is not None:
                clip.multilingual(st["input_ids"], st["attention_mask"])

    def ours() -> None:
        output = workdir / f"{label}-out"
        shutil.rmtree(output, ignore_errors=True)
        for shard in shards:
            transform(shard, str(output), stages, batch_size * READ_BATCHES, sidecar=EmbeddingWriter)

    raw()  # warm-up (allocator, kernels)
    ours_times, raw_times = [], []
    for _ in range(runs):
        for fn, times in ((ours, ours_times), (raw, raw_times)):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    ratio = statistics.median(raw_times) / statistics.median(ours_times)
    print(f"{label}: ours {_rates(images, ours_times)}")
    print(f"{label}: raw  {_rates(images, raw_times)}")
    print(f"{label}: ours / raw throughput (median) = {ratio:.2f}x", flush=True)
    return ratio


def _real_images():
    """tests/models/real_images.py, loaded by path: a package on PyPI installs a top-level ``tests`` package
    into site-packages, which shadows the repository's ``tests`` folder for a plain import."""
    spec = importlib.util.spec_from_file_location("real_images", ROOT / "tests" / "models" / "real_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CAPTIONS = [
    "a portrait photograph of a woman in a naval uniform",
    "Grace Hopper, computer scientist, 1984",
    "vintage photo of an officer smiling",
    "a red sports car on a race track",
]
SIZES = [(640, 480), (1200, 1400), (2000, 1500), (3000, 4000)]


def fast_decode_effect(label: str, model: str, pretrained: str | None) -> None:
    """Similarity with the opt-in JPEG draft decoding vs the full decode, on large real-format files."""
    real_images = _real_images()
    names, files = [], []
    for width, height in SIZES:
        for name, (_, data) in real_images.formats(real_images.photo(width, height)).items():
            names.append(f"{name} {width}x{height}")
            files.append(data)
    rows = len(files) * len(CAPTIONS)
    batch = pa.table({
        "key": [str(i) for i in range(rows)],
        "caption": [caption for _ in files for caption in CAPTIONS],
        "image": pa.array([data for data in files for _ in CAPTIONS], pa.binary()),
        "image_ext": ["jpg"] * rows,
    })
    torch.manual_seed(0)
    embed = ClipEmbed(model, pretrained=pretrained, multilingual=None, batch_size=32, workers=2)
    reference = np.array(embed(batch)[SIMILARITY].to_pylist())
    embed.fast_decode = True  # the same loaded model, now decoding JPEGs with draft
    difference = np.abs(reference - np.array(embed(batch)[SIMILARITY].to_pylist()))
    per_file = difference.reshape(len(files), len(CAPTIONS)).max(axis=1)
    print(f"{label}: |similarity(full decode) - similarity(--fast-decode)| over {rows} image-caption pairs: "
          f"max {difference.max():.2e}, median {np.median(difference):.2e}")
    for fmt in ("jpeg", "png-alpha", "cmyk-jpeg", "webp", "exif-rotated-jpeg"):
        worst = max((d, n) for d, n in zip(per_file, names) if n.startswith(fmt + " "))
        print(f"  {fmt:18s} max {worst[0]:.2e} ({worst[1].split()[1]})")
    for draft, what in ((None, "full decode"), (embed._image_size, "--fast-decode")):
        started = time.perf_counter()
        for data in files:
            embed.clip.preprocess(decode_image(data, draft))
        print(f"  decode + preprocess, {what}: {1000 * (time.perf_counter() - started) / len(files):.1f} ms/image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="images for the tiny model")
    parser.add_argument("--vit-images", type=int, default=128, help="images for ViT-B-32 (0: skip)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="decode threads")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fast-decode-only", action="store_true", help="only measure the --fast-decode effect")
    args = parser.parse_args()
    if args.fast_decode_only:
        fast_decode_effect("ViT-B-32-quickgelu (random weights)", "ViT-B-32-quickgelu", None)
        fast_decode_effect("laion-hf-tiny", "laion-hf-tiny", "default")
        return
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch_size}, decode threads {args.workers}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_model("laion-hf-tiny", "laion-hf-tiny", args.images, args.batch_size, args.workers, args.runs,
                    Path(tmp), multilingual=True)
        if args.vit_images:
            bench_model("ViT-B-32 (random weights)", "ViT-B-32", args.vit_images, args.batch_size, args.workers,
                        args.runs, Path(tmp), multilingual=False)


if __name__ == "__main__":
    main()
