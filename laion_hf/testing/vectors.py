"""Generated embeddings in clip-retrieval layout, for the tests and the benchmark of the search room.

Two kinds of random vectors: isotropic ones (uniform on the sphere: every
point nearly equidistant from every other, the hardest case for any
approximate index) and clustered ones (points around random centres, closer
to how CLIP embeddings of a real collection bunch by concept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.io.atomic import atomic_path


def random_vectors(rows: int, dimension: int, *, clusters: int = 0, spread: float = 0.5, seed: int = 0) -> np.ndarray:
    """``rows`` L2-normalised float32 vectors; ``clusters`` > 0 draws them around that many random centres."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, dimension), dtype=np.float32)
    if clusters:
        centres = rng.standard_normal((clusters, dimension), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        vectors = centres[rng.integers(0, clusters, rows)] + spread / np.sqrt(dimension) * vectors
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def write_embedding_folder(
    folder: str | Path,
    image: np.ndarray,
    metadata: pa.Table,
    *,
    text: np.ndarray | None = None,
    rows_per_shard: int = 100_000,
) -> list[str]:
    """Write vectors and their metadata as clip-retrieval shards (fp16 .npy + parquet); return the shard names."""
    folder = Path(folder)
    names = []
    for number, start in enumerate(range(0, len(image), rows_per_shard)):
        name = f"{number:05d}"
        end = start + rows_per_shard
        parts = [("img_emb", image[start:end])] + ([("text_emb", text[start:end])] if text is not None else [])
        for kind, vectors in parts:
            (folder / kind).mkdir(parents=True, exist_ok=True)
            with atomic_path(str(folder / kind / f"{kind}_{name}.npy")) as tmp, open(tmp, "wb") as f:
                np.save(f, vectors.astype(np.float16))
        (folder / "metadata").mkdir(parents=True, exist_ok=True)
        with atomic_path(str(folder / "metadata" / f"metadata_{name}.parquet")) as tmp:
            pq.write_table(metadata.slice(start, rows_per_shard), tmp)
        names.append(name)
    return names
