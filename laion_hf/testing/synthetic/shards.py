"""Synthetic samples written as an img2dataset download (tests, benchmarks, demos of image stages).

Shards look like img2dataset's output: ``NNNNN.tar`` with ``KEY.jpg``,
``KEY.txt`` and ``KEY.json`` per sample, ``NNNNN.parquet`` with the metadata
(url, caption, key, status, language, width, height) and ``NNNNN_stats.json``.
A fraction of the samples get a mismatched caption; which ones is returned as
ground truth beside the shards, never written into them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.io.atomic import atomic_path, join, write_json
from laion_hf.io.tar import write_samples
from laion_hf.testing.synthetic import mismatched_caption, sample


@dataclass(frozen=True)
class TruthRow:
    """What the generator knows about one written sample."""

    key: str
    language: str
    matched: bool
    unsafe: bool
    watermark: bool
    aesthetic: float


def write_shards(
    output_dir: str,
    *,
    shards: int = 1,
    per_shard: int = 32,
    languages: tuple[str, ...] = ("en",),
    mismatch_rate: float = 0.5,
    size: int = 64,
    seed: int = 0,
) -> list[TruthRow]:
    """Write ``shards`` shards of ``per_shard`` samples; return the ground truth of every sample."""
    rng = random.Random(seed)
    truth: list[TruthRow] = []
    for shard in range(shards):
        name = f"{shard:05d}"
        rows, members = [], []
        for index in range(per_shard):
            key = f"{name}{index:04d}"
            scene = sample(seed * 1_000_003 + shard * per_shard + index, size=size)
            language = rng.choice(languages)
            matched = rng.random() >= mismatch_rate
            text = scene.captions[language] if matched else mismatched_caption(
                scene.attributes, language, seed=rng.randrange(1 << 30)
            )
            row = {
                "url": f"http://images.example/{key}.jpg",
                "caption": text,
                "key": key,
                "status": "success",
                "error_message": None,
                "language": language,
                "width": size,
                "height": size,
            }
            rows.append(row)
            members.append((key, {
                "jpg": scene.encode(),
                "txt": text.encode("utf-8"),
                "json": json.dumps(row, ensure_ascii=False).encode("utf-8"),
            }))
            truth.append(TruthRow(key, language, matched, scene.unsafe, scene.watermark, scene.aesthetic))
        write_samples(join(output_dir, f"{name}.tar"), members)
        with atomic_path(join(output_dir, f"{name}.parquet")) as tmp:
            pq.write_table(pa.Table.from_pylist(rows), tmp)
        write_json(join(output_dir, f"{name}_stats.json"), {"count": per_shard, "successes": per_shard})
    return truth
