"""Benchmark the score stage against the raw torch forward of the same models, in one run.

Two measurements, each alternating ours / raw over several runs:

* ``heads``: :class:`ScoreStage` on an Arrow batch that carries ``image_embedding`` (768-d fp16, as
  the embed stage leaves it) with LAION-sized heads - the L/14 NSFW detector with its
  five categorical columns (string lookups included) and aesthetic v2 - vs the two
  modules' forward on a ready float32 tensor. Measures what the stage adds around
  the heads (Arrow -> tensor, lookups, column writes).
* ``watermark``: :class:`ScoreStage` with only the watermark model, on JPEG bytes
  (decode + resize + normalise + forward), vs the model's forward on pre-decoded,
  pre-normalised tensors of the same batch size. Defaults to the shipped tiny
  watermark model; ``--watermark-backbone efficientnet_b3a`` times LAION's
  architecture (random weights) at 256x256.

Times are CPU seconds of the process (``time.process_time``, torch's threads included),
ours and raw interleaved. Weights are random (no real checkpoint here) but the architectures are LAION's,
and they load through the same checkpoint loaders the stage uses.

    .venv/bin/python bench/score.py [--rows 4096] [--images 256] [--runs 5]
"""

from __future__ import annotations

import argparse
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

from laion_hf.models.heads import NSFW_L14, AestheticV2, NsfwDetector, WatermarkDetector, save_head  # noqa: E402
from laion_hf.stages.score import EMBEDDING_COLUMN, ScoreStage, head_path, load_watermark  # noqa: E402
from laion_hf.testing.synthetic import sample  # noqa: E402


def _timed(fn) -> float:
    """CPU seconds of this process (all threads): steadier than wall time on a shared machine."""
    started = time.process_time()
    fn()
    return time.process_time() - started


def _report(name: str, unit: str, count: int, ours: list[float], raw: list[float]) -> None:
    def rates(times):
        r = sorted(count / t for t in times)
        return f"min {r[0]:,.0f} / median {statistics.median(r):,.0f} / max {r[-1]:,.0f} {unit} per CPU-second"

    ratio = statistics.median(raw) / statistics.median(ours)
    print(f"{name}: ours {rates(ours)}")
    print(f"{name}: raw  {rates(raw)}")
    print(f"{name}: ours / raw throughput (median) = {ratio:.2f}x")


def bench_heads(rows: int, runs: int, workdir: Path) -> None:
    torch.manual_seed(0)
    vocab_rng = np.random.default_rng(1)
    columns = [180, 316, 413, 440, 644]
    vocabularies = [["%f" % v for v in vocab_rng.standard_normal(2000).astype(np.float16).astype(np.float32) * 0.05] for _ in columns]
    nsfw = NsfwDetector(**NSFW_L14, categorical_columns=columns, vocabularies=vocabularies).eval()
    aesthetic = AestheticV2(768).eval()
    nsfw_path, aesthetic_path = workdir / "nsfw.safetensors", workdir / "aesthetic.pth"
    save_head(nsfw, {**NSFW_L14, "categorical_columns": columns, "vocabularies": vocabularies}, nsfw_path)
    torch.save(aesthetic.state_dict(), aesthetic_path)

    x = np.random.default_rng(0).standard_normal((rows, 768)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float16)
    batch = pa.table({"key": [str(i) for i in range(rows)], EMBEDDING_COLUMN: pa.array(list(x), pa.list_(pa.float16()))})
    tensor = torch.from_numpy(x.astype(np.float32))
    stage = ScoreStage(nsfw=str(nsfw_path), aesthetic=str(aesthetic_path), watermark=None, batch_size=rows)

    def raw() -> None:
        with torch.no_grad():
            nsfw(tensor), aesthetic(tensor)

    ours_t, raw_t = [], []
    stage(batch), raw()  # warm-up (the stage loads its heads on first use)
    for _ in range(runs):
        ours_t.append(_timed(lambda: stage(batch)))
        raw_t.append(_timed(raw))
    _report(f"heads (L/14 NSFW + aesthetic v2, {rows} embeddings/batch)", "rows", rows, ours_t, raw_t)


def bench_watermark(images: int, runs: int, backbone: str | None, workdir: Path) -> None:
    if backbone is None:
        spec, detector = "tiny", load_watermark(head_path("watermark", "tiny"))
    else:
        detector = WatermarkDetector(backbone).eval()
        spec = str(workdir / "watermark.pt")
        torch.save(detector.model.state_dict(), spec)
    data = [sample(7_000_000 + i, size=256, watermark=i % 2 == 0).encode("JPEG", quality=90) for i in range(images)]
    batch = pa.table({"key": [str(i) for i in range(images)], "image": pa.array(data, pa.binary()), "image_ext": ["jpg"] * images})
    stage = ScoreStage(nsfw=None, aesthetic=None, watermark=spec, batch_size=images)
    import io

    from PIL import Image

    pixels = detector.preprocess([Image.open(io.BytesIO(d)).convert("RGB") for d in data])

    def raw() -> None:
        with torch.no_grad():
            detector.pwatermark(pixels)

    ours_t, raw_t = [], []
    stage(batch), raw()
    for _ in range(runs):
        ours_t.append(_timed(lambda: stage(batch)))
        raw_t.append(_timed(raw))
    name = backbone or "tiny test_efficientnet"
    _report(f"watermark ({name}, {detector.image_size}px, {images} JPEGs/batch)", "images", images, ours_t, raw_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--watermark-backbone", default=None, help="e.g. efficientnet_b3a (default: the shipped tiny model)")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_heads(args.rows, args.runs, Path(tmp))
        bench_watermark(args.images, args.runs, args.watermark_backbone, Path(tmp))


if __name__ == "__main__":
    main()
