"""Train, measure and ship the tiny scoring heads of the synthetic domain (reproducible from a seed).

    python -m laion_hf.testing.train_heads [--seed 0] [--train-size 4000] [--heads nsfw,aesthetic,watermark]

The heads are LAION's classes at the tiny CLIP's width (``laion_hf.models.heads``):

- ``tiny-nsfw``: :class:`NsfwDetector` on ``laion-hf-tiny`` image embeddings; label = the
  designated unsafe motif. Its ``Normalization`` statistics are adapted on the training
  embeddings, as autokeras did.
- ``tiny-aesthetic``: :class:`AestheticV2` (LAION's purely linear MLP shape) on the same
  embeddings; target = the generator's aesthetic score (1-10).
- ``tiny-watermark``: :class:`WatermarkDetector` with timm's ``test_efficientnet`` (an
  EfficientNet, as LAION's ``efficientnet_b3a``, at 100k parameters) on 64x64 pixels;
  class 0 = watermarked, as LAION's ``pwatermark = softmax(out)[:, 0]``.

Scenes pass through what the pipeline does to an image before scoring: rendered at a
random size, JPEG-encoded, decoded, then each model's own preprocessing. Training and
held-out scenes come from disjoint seed ranges (also disjoint from the tiny CLIP's).
Writes ``weights/heads/tiny-{nsfw,aesthetic,watermark}.safetensors`` and
``weights/heads/tiny-heads.quality.json`` (the held-out figures docs/models.md quotes, and the
sha256 of the CLIP weights the embedding heads were trained on: retrain them with the CLIP).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from laion_hf.models.clip import TINY, TINY_WEIGHTS, WEIGHTS_DIR, load_clip, sha256_file
from laion_hf.models.heads import AestheticV2, NsfwDetector, WatermarkDetector, save_head
from laion_hf.testing.synthetic import sample

HEADS_DIR = WEIGHTS_DIR / "heads"
NSFW_PATH = HEADS_DIR / "tiny-nsfw.safetensors"
AESTHETIC_PATH = HEADS_DIR / "tiny-aesthetic.safetensors"
WATERMARK_PATH = HEADS_DIR / "tiny-watermark.safetensors"
QUALITY_PATH = HEADS_DIR / "tiny-heads.quality.json"

TRAIN_SEEDS_START = 3_000_000
TEST_SEEDS_START = 4_000_000
NSFW_CONFIG = {"embed_dim": 64, "hidden": [64, 32]}
AESTHETIC_CONFIG = {"embed_dim": 64, "widths": [256, 64, 32, 16]}
WATERMARK_CONFIG = {"backbone": "test_efficientnet", "hidden": [64, 32], "image_size": 64}


def scenes(start: int, count: int, seed: int) -> tuple[list[Image.Image], dict[str, np.ndarray]]:
    """``count`` scenes (half with each overlay), as decoded JPEGs of varied size, with their labels."""
    rng = random.Random(seed * 7_919 + start)
    images, unsafe, watermark, aesthetic = [], [], [], []
    for i in range(count):
        scene = sample(start + i, size=rng.choice((64, 96, 128)), p_overlay=0.5)
        data = scene.encode("JPEG", quality=rng.randint(70, 95))
        images.append(Image.open(io.BytesIO(data)).convert("RGB"))
        unsafe.append(scene.unsafe)
        watermark.append(scene.watermark)
        aesthetic.append(scene.aesthetic)
    labels = {
        "unsafe": np.array(unsafe, dtype=np.float32),
        "watermark": np.array(watermark, dtype=np.float32),
        "aesthetic": np.array(aesthetic, dtype=np.float32),
    }
    return images, labels


def embed(images: list[Image.Image], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised tiny-CLIP image embeddings rounded to float16, as the score stage sees them."""
    clip = load_clip(TINY)
    chunks = []
    for i in range(0, len(images), batch_size):
        pixels = torch.stack([clip.preprocess(im) for im in images[i : i + batch_size]])
        chunks.append(clip.encode_images(pixels))
    return torch.cat(chunks).half().float()


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the probability a positive outranks a negative (ties count half)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    positives = labels > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _classification(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    predicted = probabilities > 0.5
    truth = labels > 0.5
    return {
        "auc": round(roc_auc(labels, probabilities), 4),
        "accuracy@0.5": round(float((predicted == truth).mean()), 4),
        "precision@0.5": round(float((predicted & truth).sum() / max(1, predicted.sum())), 4),
        "recall@0.5": round(float((predicted & truth).sum() / max(1, truth.sum())), 4),
    }


def train_nsfw(embeddings: torch.Tensor, unsafe: torch.Tensor, epochs: int) -> NsfwDetector:
    head = NsfwDetector(**NSFW_CONFIG)
    with torch.no_grad():  # Keras Normalization.adapt: per-column mean and (population) variance
        head.mean.copy_(embeddings.mean(0))
        head.variance.copy_(embeddings.var(0, unbiased=False))
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        for batch in torch.randperm(len(embeddings)).split(256):
            optimizer.zero_grad()
            loss_fn(head.logits(embeddings[batch]), unsafe[batch]).backward()
            optimizer.step()
    return head.eval()


def train_aesthetic(embeddings: torch.Tensor, score: torch.Tensor, epochs: int) -> AestheticV2:
    head = AestheticV2(**AESTHETIC_CONFIG)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        head.train()
        for batch in torch.randperm(len(embeddings)).split(128):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(head(embeddings[batch]), score[batch]).backward()
            optimizer.step()
        schedule.step()
    return head.eval()


def train_watermark(images: list[Image.Image], watermark: torch.Tensor, epochs: int) -> WatermarkDetector:
    detector = WatermarkDetector(**WATERMARK_CONFIG)
    pixels = detector.preprocess(images)
    target = (1 - watermark).long()  # class 0 = watermark (LAION's convention)
    optimizer = torch.optim.AdamW(detector.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(pixels) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    for _ in range(epochs):
        detector.train()
        for batch in torch.randperm(len(pixels)).split(64):
            flip = torch.rand(len(batch)) < 0.5  # mirrored text is still a watermark
            x = torch.where(flip.view(-1, 1, 1, 1), pixels[batch].flip(-1), pixels[batch])
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(detector(x), target[batch]).backward()
            optimizer.step()
            schedule.step()
    return detector.eval()


@torch.no_grad()
def _pwatermark(detector: WatermarkDetector, images: list[Image.Image]) -> np.ndarray:
    return torch.cat([detector.pwatermark(detector.preprocess(images[i : i + 256])) for i in range(0, len(images), 256)]).numpy()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--test-size", type=int, default=1500)
    parser.add_argument("--embedding-epochs", type=int, default=60)
    parser.add_argument("--watermark-epochs", type=int, default=4)
    parser.add_argument(
        "--heads",
        default="nsfw,aesthetic,watermark",
        help="which to train; after retraining the tiny CLIP only nsfw,aesthetic need to follow",
    )
    parser.add_argument("--output", type=Path, default=HEADS_DIR)
    args = parser.parse_args(argv)
    chosen = set(args.heads.split(","))
    if not chosen <= {"nsfw", "aesthetic", "watermark"}:
        parser.error(f"--heads: unknown {', '.join(sorted(chosen - {'nsfw', 'aesthetic', 'watermark'}))}")

    torch.manual_seed(args.seed)
    started = time.perf_counter()
    train_images, train = scenes(TRAIN_SEEDS_START + args.seed * 100_000, args.train_size, args.seed)
    test_images, test = scenes(TEST_SEEDS_START, args.test_size, 0)
    quality_path = args.output / QUALITY_PATH.name
    quality = json.loads(quality_path.read_text(encoding="utf-8")) if quality_path.exists() else {}
    split = {"seed": args.seed, "train_scenes": args.train_size, "test_scenes": args.test_size,
             "test_seeds": [TEST_SEEDS_START, TEST_SEEDS_START + args.test_size]}
    args.output.mkdir(parents=True, exist_ok=True)

    if chosen & {"nsfw", "aesthetic"}:
        train_emb, test_emb = embed(train_images), embed(test_images)
        clip = {"clip": TINY, "clip_sha256": sha256_file(TINY_WEIGHTS)}
        print(f"scenes and embeddings: {time.perf_counter() - started:.0f}s", flush=True)
    if "nsfw" in chosen:
        nsfw = train_nsfw(train_emb, torch.from_numpy(train["unsafe"]), args.embedding_epochs)
        with torch.no_grad():
            punsafe = nsfw(test_emb).numpy()
        quality["nsfw"] = {**split, **clip, **_classification(test["unsafe"], punsafe)}
        save_head(nsfw, NSFW_CONFIG, args.output / NSFW_PATH.name)
    if "aesthetic" in chosen:
        aesthetic = train_aesthetic(train_emb, torch.from_numpy(train["aesthetic"]), args.embedding_epochs)
        with torch.no_grad():
            predicted = aesthetic(test_emb).numpy()
        target = test["aesthetic"]
        quality["aesthetic"] = {
            **split,
            **clip,
            "mae": round(float(np.abs(predicted - target).mean()), 4),
            "pearson": round(float(np.corrcoef(predicted, target)[0, 1]), 4),
            "baseline_mae": round(float(np.abs(target - target.mean()).mean()), 4),
        }
        save_head(aesthetic, AESTHETIC_CONFIG, args.output / AESTHETIC_PATH.name)
    if "watermark" in chosen:
        watermark = train_watermark(train_images, torch.from_numpy(train["watermark"]), args.watermark_epochs)
        quality["watermark"] = {**split, **_classification(test["watermark"], _pwatermark(watermark, test_images))}
        save_head(watermark, WATERMARK_CONFIG, args.output / WATERMARK_PATH.name)
    print(f"trained {', '.join(sorted(chosen))} in {time.perf_counter() - started:.0f}s", flush=True)
    quality_path.write_text(json.dumps(quality, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(quality, indent=2))
    return quality


if __name__ == "__main__":
    main()
