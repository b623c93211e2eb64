"""Fixtures for the hub tests: the loopback Hub server and small img2dataset-layout outputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from laion_hf.hub.pytest_plugin import hub  # noqa: F401  (re-exported fixture)
from laion_hf.io.tar import write_samples


def tiny_jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8 + seed % 5, 8), ((seed * 37) % 256, (seed * 11) % 256, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_img2dataset_dir(directory: Path, shards: int, per_shard: int, offset: int = 0, failed_every: int = 0) -> list[dict]:
    """An img2dataset-style output (NNNNN.tar + NNNNN.parquet + stats) with scores; returns the successful rows."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for shard in range(shards):
        rows, samples = [], []
        for index in range(per_shard):
            n = offset + shard * per_shard + index
            key = f"{shard:05d}{index:04d}"
            failed = failed_every and index % failed_every == failed_every - 1
            row = {
                "url": f"http://images.example/{n}.jpg",
                "caption": f"caption number {n}",
                "key": key,
                "status": "failed_to_download" if failed else "success",
                "error_message": "404" if failed else None,
                "width": None if failed else 8 + n % 5,
                "height": None if failed else 8,
                "similarity": 0.25 + (n % 10) / 100,
                "punsafe": (n % 7) / 10,
                "language": ["en", "de", "fr"][n % 3],
            }
            rows.append(row)
            if not failed:
                meta = {k: row[k] for k in ("url", "caption", "key", "status", "error_message", "width", "height")}
                samples.append((key, {"jpg": tiny_jpeg(n), "txt": row["caption"].encode(), "json": json.dumps(meta).encode()}))
                written.append(row)
        schema = pa.schema(
            [
                ("url", pa.string()), ("caption", pa.string()), ("key", pa.string()), ("status", pa.string()),
                ("error_message", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
                ("similarity", pa.float64()), ("punsafe", pa.float32()), ("language", pa.string()),
            ]
        )
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), directory / f"{shard:05d}.parquet")
        write_samples(str(directory / f"{shard:05d}.tar"), samples)
        (directory / f"{shard:05d}_stats.json").write_text(json.dumps({"count": per_shard, "successes": len(samples)}))
    return written


@pytest.fixture
def make_img2dataset_dir():
    """The writer of img2dataset-style fixture outputs, for tests that need their own shape."""
    return write_img2dataset_dir


@pytest.fixture
def variants(tmp_path) -> dict[str, tuple[Path, list[dict]]]:
    """Two variants like a clean run writes them: research (3 shards) and research-safe (2 shards)."""
    research = write_img2dataset_dir(tmp_path / "out" / "research", shards=3, per_shard=6, failed_every=4)
    safe = write_img2dataset_dir(tmp_path / "out" / "research-safe", shards=2, per_shard=5, offset=100)
    return {"research": (tmp_path / "out" / "research", research), "research-safe": (tmp_path / "out" / "research-safe", safe)}
