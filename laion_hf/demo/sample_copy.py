"""A small LAION copy as people actually hold one, with Re-LAION-style removal lists.

LAION's metadata is Spark output: ``part-NNNNN-<uuid>-c000.snappy.parquet``
shards, a hidden Hadoop checksum ``.part-...parquet.crc`` beside each, and an
empty ``_SUCCESS``; :func:`write_spark_output` writes exactly that, and
:func:`release_table` turns real (URL, TEXT) pairs into the rows of any LAION
family (:data:`laion_hf.core.schema.FAMILIES`), other columns drawn from a seed.

The two parts of a copy do not line up, as in real copies:

- ``metadata/``: LAION-5B "-joined" shards (URL, TEXT, WIDTH, HEIGHT,
  similarity, hash, punsafe, pwatermark), with the
  awkward rows real data has: NULL and empty captions, duplicated rows,
  punsafe exactly at the variant thresholds, NULL punsafe;
- ``download/``: an img2dataset download of those rows (``NNNNN.tar`` with
  ``KEY.jpg/.txt/.json``, ``NNNNN.parquet``, ``NNNNN_stats.json``): samples in
  completion order, failed samples only in the sidecar parquet, tar images
  re-encoded (as JPEG, PNG and WebP in turn, the formats LAION shards hold)
  while the sidecar ``sha256`` is that of the original bytes, as after a
  resizing download;
- ``lists/``: a url-sha256 text list (mixed case, stray whitespace), an
  image-sha256 CSV of original-image hashes, a laion-hash parquet and a keyword file.

:func:`clean_sample_copy` is the clean half of ``laion-hf demo``.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from laion_hf.clean import CleanOptions, CleanReport, clean_copy
from laion_hf.core.hashing import laion_hash
from laion_hf.core.schema import FAMILIES, IMG2DATASET, LAION_5B_JOINED
from laion_hf.io.tar import write_samples

_WORDS = ("red", "small", "house", "garden", "river", "vintage", "poster", "dog", "city", "map", "blue", "chair")
#: A stand-in for the keyword filter (the real lists are not public).
KEYWORD = "forbiddenword"
_SPARK_UUID = "3f2b5c1e-7d4a-4e8b-9a61-0c5d2e8f7b13"


@dataclass
class SampleCopy:
    """Where the generated copy's parts and lists are."""

    root: Path
    metadata_dir: Path
    download_dir: Path
    removal: list[tuple[str, str]] = field(default_factory=list)
    keyword_file: Path | None = None


def _hadoop_crc(data: bytes, bytes_per_checksum: int = 512) -> bytes:
    """A Hadoop ``ChecksumFileSystem`` ``.crc`` file: magic, chunk size, a CRC32 per chunk."""
    chunks = range(0, len(data), bytes_per_checksum)
    sums = b"".join(struct.pack(">I", zlib.crc32(data[i : i + bytes_per_checksum])) for i in chunks)
    return b"crc\0" + struct.pack(">i", bytes_per_checksum) + sums


def write_spark_output(directory: Path, table: pa.Table, shards: int, uuid: str = _SPARK_UUID) -> list[Path]:
    """Write ``table`` as LAION's Spark jobs wrote a release: parts, hidden ``.crc`` files, ``_SUCCESS``."""
    directory.mkdir(parents=True, exist_ok=True)
    per_shard = -(-table.num_rows // shards)
    parts = []
    for shard in range(shards):
        part = directory / f"part-{shard:05d}-{uuid}-c000.snappy.parquet"
        pq.write_table(table.slice(shard * per_shard, per_shard), part, compression="snappy")
        (directory / f".{part.name}.crc").write_bytes(_hadoop_crc(part.read_bytes()))
        parts.append(part)
    (directory / "_SUCCESS").write_bytes(b"")
    (directory / "._SUCCESS.crc").write_bytes(_hadoop_crc(b""))
    return parts


_LANGUAGES = ("de", "fr", "es", "ru", "ja", "pt", "it", "nl")
_LICENSES = ("?", "?", "?", "https://creativecommons.org/licenses/by/4.0/")
_NSFW = ("UNLIKELY", "UNLIKELY", "UNLIKELY", "UNSURE", "NSFW")
_PLANTED_PUNSAFE = {3: 0.45, 4: 0.95, 13: None}  # by row index modulo 50

#: A plausible value of each LAION column (lower-cased name) from (row index, url, text, rng).
_RELEASE_VALUES: dict[str, Callable] = {
    "sample_id": lambda i, url, text, rng: 10_000_000 + i,
    "url": lambda i, url, text, rng: url,
    "text": lambda i, url, text, rng: text,
    "caption": lambda i, url, text, rng: text,
    "width": lambda i, url, text, rng: rng.randint(64, 2048),
    "height": lambda i, url, text, rng: rng.randint(64, 2048),
    "original_width": lambda i, url, text, rng: rng.randint(64, 4096),
    "original_height": lambda i, url, text, rng: rng.randint(64, 4096),
    "license": lambda i, url, text, rng: rng.choice(_LICENSES),
    "nsfw": lambda i, url, text, rng: rng.choice(_NSFW),
    "similarity": lambda i, url, text, rng: rng.uniform(0.28, 0.45),
    "language": lambda i, url, text, rng: rng.choice(_LANGUAGES),
    "hash": lambda i, url, text, rng: laion_hash(url, text),
    "punsafe": lambda i, url, text, rng: _PLANTED_PUNSAFE.get(i % 50, rng.random() ** 3),
    "pwatermark": lambda i, url, text, rng: rng.random(),
    "aesthetic": lambda i, url, text, rng: rng.uniform(3.0, 8.0),
    "key": lambda i, url, text, rng: f"{i // 10000:05d}{i % 10000:04d}",
    "status": lambda i, url, text, rng: "success",
    "error_message": lambda i, url, text, rng: None,
    "exif": lambda i, url, text, rng: None,
    "sha256": lambda i, url, text, rng: hashlib.sha256(f"{url}#image".encode()).hexdigest(),
}


def release_table(pairs: pa.Table, family: str, seed: int = 0) -> pa.Table:
    """Real (URL, TEXT) ``pairs`` as the rows of a LAION release of ``family``, in its exact schema.

    Columns other than URL/TEXT are drawn from ``seed``; punsafe has the
    threshold values 0.45 and 0.95 and a NULL planted every 50 rows.
    """
    schema = FAMILIES[family]
    rng = random.Random(seed)
    columns = {name.lower(): name for name in pairs.column_names}
    urls, texts = pairs[columns["url"]].to_pylist(), pairs[columns["text"]].to_pylist()
    rows = [
        {name: _RELEASE_VALUES[name.lower()](i, url, text, rng) for name in schema.names}
        for i, (url, text) in enumerate(zip(urls, texts))
    ]
    return pa.Table.from_pylist(rows, schema=schema)


def _caption(rng: random.Random, index: int) -> str | None:
    if index % 37 == 5:
        return None
    if index % 41 == 7:
        return ""
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 6)))
    return f"{words} {KEYWORD}" if index % 53 == 11 else words


def _punsafe(rng: random.Random, index: int) -> float | None:
    special = {3: 0.45, 4: 0.95, 13: None}
    if index % 50 in special:
        return special[index % 50]
    return rng.random() ** 3  # most rows safe, a tail above the thresholds


def metadata_rows(rng: random.Random, count: int, offset: int) -> list[dict]:
    rows = []
    for i in range(offset, offset + count):
        url = f"https://img{i % 7}.example.com/photos/{i:06d}/Image_{i}.jpg"
        caption = _caption(rng, i)
        row = {
            "URL": url,
            "TEXT": caption,
            "WIDTH": rng.randint(64, 1024),
            "HEIGHT": rng.randint(64, 1024),
            "similarity": rng.uniform(0.28, 0.45),
            "hash": laion_hash(url, caption),
            "punsafe": _punsafe(rng, i),
            "pwatermark": rng.random(),
        }
        rows.append(row)
        if i % 29 == 0:
            rows.append(dict(row))  # LAION has duplicate rows; they keep their multiplicity
    return rows


#: Stored formats, in turn: LAION shards hold .jpg, .png and .webp.
_STORED_FORMATS = (("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"))


def _images(rng: random.Random, index: int) -> tuple[bytes, bytes, str]:
    """(original PNG bytes, the bytes as the download stores them, their extension)."""
    image = Image.new("RGB", (32, 32), tuple(rng.randrange(256) for _ in range(3)))
    image.putpixel((rng.randrange(32), rng.randrange(32)), (rng.randrange(256), 0, 0))
    extension, format = _STORED_FORMATS[index % len(_STORED_FORMATS)]
    original, stored = io.BytesIO(), io.BytesIO()
    image.save(original, format="PNG")
    image.resize((24, 24)).save(stored, format=format, quality=90)  # resized: never the original bytes
    return original.getvalue(), stored.getvalue(), extension


def _write_download_shard(directory: Path, shard_id: int, rows: list[dict], rng: random.Random) -> list[bytes]:
    """One img2dataset shard of ``rows``; returns the original bytes of the downloaded images."""
    records, samples, originals = [], [], []
    for index, row in enumerate(rows):
        key = f"{shard_id:05d}{index:04d}"
        failed = rng.random() < 0.15
        record = {
            "url": row["URL"],
            "caption": row["TEXT"],
            "key": key,
            "status": "failed_to_download" if failed else "success",
            "error_message": "HTTP Error 404: Not Found" if failed else None,
            "width": None if failed else 24,
            "height": None if failed else 24,
            "original_width": None if failed else 24,
            "original_height": None if failed else 24,
            "exif": None if failed else "{}",
            "sha256": None,
        }
        if not failed:
            original, stored, extension = _images(rng, index)
            record["sha256"] = hashlib.sha256(original).hexdigest()
            originals.append(original)
            meta = {k: v for k, v in record.items()}
            samples.append(
                (key, {extension: stored, "txt": (row["TEXT"] or "").encode(), "json": json.dumps(meta).encode()})
            )
        records.append(record)
    rng.shuffle(records)  # img2dataset writes rows in completion order
    rng.shuffle(samples)
    pq.write_table(pa.Table.from_pylist(records, schema=IMG2DATASET), directory / f"{shard_id:05d}.parquet")
    write_samples(str(directory / f"{shard_id:05d}.tar"), samples)
    successes = sum(1 for r in records if r["status"] == "success")
    stats = {
        "count": len(records),
        "successes": successes,
        "failed_to_download": len(records) - successes,
        "failed_to_resize": 0,
        "status_dict": {"success": successes, "HTTP Error 404: Not Found": len(records) - successes},
    }
    (directory / f"{shard_id:05d}_stats.json").write_text(json.dumps(stats, indent=2))
    return originals


def generate_sample_copy(
    root: str | Path, *, metadata_shards: int = 2, rows_per_shard: int = 300, download_shards: int = 3, seed: int = 0
) -> SampleCopy:
    """Write a sample LAION copy (metadata + download + removal lists) under ``root``."""
    rng = random.Random(seed)
    root = Path(root)
    copy = SampleCopy(root, root / "metadata", root / "download")
    lists = root / "lists"
    for directory in (copy.metadata_dir, copy.download_dir, lists):
        directory.mkdir(parents=True, exist_ok=True)

    all_rows = []
    for shard in range(metadata_shards):
        all_rows.extend(metadata_rows(rng, rows_per_shard, shard * rows_per_shard))
    write_spark_output(copy.metadata_dir, pa.Table.from_pylist(all_rows, schema=LAION_5B_JOINED), metadata_shards)

    # The download covers a subset of the metadata (one row per (url, caption), like img2dataset input).
    unique = list({(r["URL"], r["TEXT"]): r for r in all_rows}.values())
    downloaded = [r for r in unique if rng.random() < 0.8]
    per_shard = -(-len(downloaded) // download_shards)
    originals: list[bytes] = []
    for shard in range(download_shards):
        part = downloaded[shard * per_shard : (shard + 1) * per_shard]
        originals.extend(_write_download_shard(copy.download_dir, shard, part, rng))

    listed_urls = [r["URL"] for r in rng.sample(unique, max(3, len(unique) // 40))]
    url_list = lists / "url-sha256.txt"
    url_list.write_text(
        "# sha256 of reported URLs\n"
        + "".join(
            (f"  {hashlib.sha256(u.encode()).hexdigest().upper()}  \n" if i % 2 else f"{hashlib.sha256(u.encode()).hexdigest()}\n")
            for i, u in enumerate(listed_urls)
        )
    )
    image_list = lists / "image-sha256.csv"
    listed_images = rng.sample(originals, max(2, len(originals) // 50))
    image_list.write_text("image_sha256,source\n" + "".join(f"{hashlib.sha256(b).hexdigest()},partner\n" for b in listed_images))
    hash_list = lists / "laion-hash.parquet"
    listed_hashes = [r["hash"] for r in rng.sample(unique, max(2, len(unique) // 60))]
    pq.write_table(pa.table({"hash": pa.array(listed_hashes, pa.int64())}), hash_list)
    keyword_file = lists / "keywords.txt"
    keyword_file.write_text(f"# keyword text filter\n{KEYWORD}\n")

    copy.removal = [("url-sha256", str(url_list)), ("image-sha256", str(image_list)), ("laion-hash", str(hash_list))]
    copy.keyword_file = keyword_file
    return copy


def clean_sample_copy(
    copy: SampleCopy,
    output_root: str | Path,
    variants: tuple[str, ...] = ("research", "research-safe"),
    workers: int = 1,
    on_report: Callable[[str, str, CleanReport], None] | None = None,
) -> dict[str, dict[str, CleanReport]]:
    """Clean the whole of ``copy`` into ``output_root/<variant>/{download,metadata}``, one run per variant.

    The download's sidecar has no punsafe, so flagged rows are found in the
    metadata by the LAION hash of (url, caption); the metadata loses the rows
    whose image an image list removed from the download.
    """
    reports: dict[str, dict[str, CleanReport]] = {}
    for variant in variants:
        output = Path(output_root) / variant
        options = CleanOptions(
            remove=tuple(copy.removal), variant=variant, keyword_file=str(copy.keyword_file),
            metadata=str(copy.metadata_dir), metadata_output=str(output / "metadata"),
        )
        report = clean_copy(str(copy.download_dir), str(output / "download"), options, workers=workers)
        reports[variant] = {"download": report, "metadata": report.metadata}
        for part, part_report in reports[variant].items():
            if on_report is not None:
                on_report(variant, part, part_report)
    return reports
