"""Helpers for samples whose image may be stored in any of the formats LAION shards hold."""

from __future__ import annotations

IMAGE_FORMATS = {"jpg", "png", "webp"}


def image_bytes(members: dict[str, bytes]) -> bytes:
    """The image member of a sample, whichever format it was stored in (exactly one)."""
    [extension] = IMAGE_FORMATS & set(members)
    return members[extension]


def write_real_photo_shards(directory, pairs, shards: int = 1, per_shard: int = 5, extra: dict | None = None) -> list[dict]:
    """An img2dataset-layout download of real LAION captions whose images are real photos in the five formats.

    Each shard holds JPEG, PNG with alpha, CMYK JPEG, WebP and EXIF-rotated JPEG
    samples in turn, stored under their true extension as ``laion-hf download``
    keeps them. ``extra`` adds sidecar columns (name -> one value per row of the
    run). Returns the sidecar rows.
    """
    import json
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from laion_hf.demo.photos import real_photos
    from laion_hf.io.tar import write_samples

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    photos = real_photos()
    texts = pairs.column("TEXT").to_pylist()
    urls = pairs.column("URL").to_pylist()
    written = []
    for shard in range(shards):
        rows, samples = [], []
        for index in range(per_shard):
            n = shard * per_shard + index
            photo = photos[n % len(photos)]
            row = {"url": urls[n], "caption": texts[n], "key": f"{shard:05d}{index:04d}", "status": "success",
                   "width": photo.size[0], "height": photo.size[1]}
            row.update({name: values[n] for name, values in (extra or {}).items()})
            meta = json.dumps(row).encode()
            samples.append((row["key"], {photo.extension: photo.data, "txt": (row["caption"] or "").encode(), "json": meta}))
            rows.append(row)
        pq.write_table(pa.Table.from_pylist(rows), directory / f"{shard:05d}.parquet")
        write_samples(str(directory / f"{shard:05d}.tar"), samples)
        (directory / f"{shard:05d}_stats.json").write_text(json.dumps({"count": per_shard, "successes": per_shard}))
        written.extend(rows)
    return written
