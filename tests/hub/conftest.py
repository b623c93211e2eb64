"""Fixtures for the hub tests: the loopback Hub server and small img2dataset-layout outputs."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from laion_hf.io.tar import write_samples
from laion_hf.testing.fixtures import hub  # noqa: F401  (re-exported fixture)


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


#: The image formats real LAION shards hold, one per sample in turn.
REAL_FORMATS = ("jpeg", "png-alpha", "cmyk-jpeg", "webp", "exif-rotated")


def real_format_image(seed: int, kind: str) -> tuple[str, bytes]:
    """(extension, bytes) of a photo-like picture saved as ``kind`` (one of :data:`REAL_FORMATS`)."""
    import numpy as np

    width, height = 96 + seed % 7 * 8, 72
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 48, (height, width, 3))
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1) + noise
    image = Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"), "RGB")
    buffer = io.BytesIO()
    if kind == "png-alpha":
        image.putalpha(Image.linear_gradient("L").resize(image.size))
        image.save(buffer, "PNG")
        return "png", buffer.getvalue()
    if kind == "webp":
        image.save(buffer, "WEBP", quality=80)
        return "webp", buffer.getvalue()
    if kind == "cmyk-jpeg":
        image.convert("CMYK").save(buffer, "JPEG", quality=90)
    elif kind == "exif-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
        image.save(buffer, "JPEG", quality=90, exif=exif)
    else:
        image.save(buffer, "JPEG", quality=90)
    return "jpg", buffer.getvalue()


@pytest.fixture
def real_download(tmp_path, laion_pairs) -> Path:
    """What `laion-hf download` leaves for 48 real LAION pairs: 2 shards of tars in the real image formats
    (JPEG, PNG with alpha, CMYK JPEG, WebP, EXIF-rotated), sidecar parquets listing failed rows too, stats,
    and ``download_report.json``. Captions carry their detected language, as extracted candidates do."""
    import hashlib

    from laion_hf.core.stage import StageStats
    from laion_hf.extract.language import LanguageDetector
    from laion_hf.io.atomic import write_json
    from laion_hf.steps.download import REPORT_FILE, DownloadReport

    directory = tmp_path / "real-download"
    directory.mkdir()
    pairs = laion_pairs.slice(0, 48).to_pylist()
    languages = LanguageDetector().detect_all([p["TEXT"] for p in pairs])
    report = DownloadReport("download", output_dir=str(directory))
    for shard in range(2):
        rows, samples, stats = [], [], StageStats("download")
        for index in range(24):
            n = shard * 24 + index
            key, pair = f"{shard:05d}{index:04d}", pairs[n]
            failed = n % 5 == 4
            row = {"url": pair["URL"], "caption": pair["TEXT"], "key": key, "language": languages[n],
                   "status": "failed_to_download" if failed else "success",
                   "error_message": "HTTP Error 404: Not Found" if failed else None,
                   "error_reason": "http-404" if failed else None,
                   "width": None, "height": None, "original_width": None, "original_height": None, "sha256": None}
            if not failed:
                extension, data = real_format_image(n, REAL_FORMATS[n % len(REAL_FORMATS)])
                size = Image.open(io.BytesIO(data)).size
                row.update(width=size[0], height=size[1], original_width=size[0], original_height=size[1],
                           sha256=hashlib.sha256(data).hexdigest())
                meta = {k: row[k] for k in ("url", "caption", "key", "status", "error_message", "width", "height", "sha256")}
                samples.append((key, {extension: data, "txt": pair["TEXT"].encode(), "json": json.dumps(meta).encode()}))
            rows.append(row)
            stats.add_batch(1, 0 if failed else 1, Counter({"http-404": 1} if failed else {}))
        pq.write_table(pa.Table.from_pylist(rows), directory / f"{shard:05d}.parquet")
        write_samples(str(directory / f"{shard:05d}.tar"), samples)
        (directory / f"{shard:05d}_stats.json").write_text(json.dumps({"count": 24, "successes": len(samples)}))
        report.merge(stats)
        report.shards.append(f"{shard:05d}")
    report.processed = report.rows_in
    write_json(str(directory / REPORT_FILE), report.to_dict())
    return directory
