"""The dedup tests' input: two img2dataset-layout shards with exact and near duplicates across them, the
decisions they must give, and a clip-retrieval embedding folder for them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.hashing import laion_hash
from laion_hf.io.tar import write_samples
from laion_hf.stages.duplicates import DUPLICATE_HASH, NEAR_DUPLICATE_PHASH
from laion_hf.testing.synthetic import sample


def encode(image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


IMAGE_A = sample(1).image
IMAGE_B = sample(2).image
A = encode(IMAGE_A)
A_JPEG = encode(IMAGE_A, "JPEG", quality=95)  # a re-encode of A
A_SMALLER = encode(IMAGE_A.resize((56, 56)))  # a resize of A
B = encode(IMAGE_B)
C, D, E = (encode(sample(seed).image) for seed in (3, 4, 5))

#: shard -> [(key, url, caption, image)]; url+caption equal => same LAION hash.
SHARDS = {
    "00000": [
        ("000000000", "http://a.example/1.png", "a red circle", A),
        ("000000001", "http://a.example/2.png", "a blue square", B),
        ("000000002", "http://b.example/a-copy.jpg", "copy of a", A_JPEG),  # near A
    ],
    "00001": [
        ("000010000", "http://a.example/1.png", "a red circle", C),  # same hash as 000000000
        ("000010001", "http://c.example/d.png", "something else", D),
        ("000010002", "http://d.example/b.png", "b again", B),  # near (identical to) B
        ("000010003", "http://b.example/a-copy.jpg", "copy of a", E),  # same hash as 000000002, itself removed
        ("000010004", "http://e.example/a-small.png", "a smaller", A_SMALLER),  # near A
    ],
}
EXPECTED_REMOVED = {
    "000000002": ("000000000", NEAR_DUPLICATE_PHASH),
    "000010000": ("000000000", DUPLICATE_HASH),
    "000010002": ("000000001", NEAR_DUPLICATE_PHASH),
    "000010003": ("000000000", DUPLICATE_HASH),  # its twin 000000002 is removed: points at the row kept
    "000010004": ("000000000", NEAR_DUPLICATE_PHASH),
}
ALL_KEYS = {row[0] for rows in SHARDS.values() for row in rows}


def write_input(directory: Path) -> Path:
    """Two img2dataset-layout shards (tar + parquet, with the failed-row convention: one row not in the tar)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in SHARDS.items():
        write_samples(
            str(directory / f"{name}.tar"),
            ((key, {"png": image, "txt": caption.encode(), "json": json.dumps({"key": key}).encode()})
             for key, _, caption, image in rows),
        )
        failed = (f"{name}9999", "http://gone.example/x.png", "a red circle", None)
        table_rows = [*rows, failed]
        pq.write_table(
            pa.table({
                "key": [r[0] for r in table_rows],
                "url": [r[1] for r in table_rows],
                "caption": [r[2] for r in table_rows],
                "hash": [laion_hash(r[1], r[2]) for r in table_rows],
                "status": ["success"] * len(rows) + ["failed_to_download"],
            }),
            directory / f"{name}.parquet",
        )
    return directory


def write_embeddings(directory: Path, near_pairs: dict[str, str], dim: int = 32) -> Path:
    """A clip-retrieval folder (img_emb + metadata per shard): random unit vectors, except that each key of
    ``near_pairs`` gets its partner's vector plus a little noise (cosine > 0.999)."""
    rng = np.random.default_rng(7)
    vectors = {key: rng.standard_normal(dim) for key in sorted(ALL_KEYS)}
    for key, partner in near_pairs.items():
        vectors[key] = vectors[partner] + 0.01 * rng.standard_normal(dim)
    for name, rows in SHARDS.items():
        keys = [row[0] for row in rows]
        (directory / "img_emb").mkdir(parents=True, exist_ok=True)
        (directory / "metadata").mkdir(parents=True, exist_ok=True)
        matrix = np.stack([vectors[k] / np.linalg.norm(vectors[k]) for k in keys]).astype(np.float16)
        np.save(directory / "img_emb" / f"img_emb_{name}.npy", matrix)
        pq.write_table(pa.table({"key": keys}), directory / "metadata" / f"metadata_{name}.parquet")
    return directory
