"""Small img2dataset-layout image shards for build and runner tests (no network, no models)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.hashing import laion_hash
from laion_hf.io.tar import write_samples

LANGUAGES = ("en", "de", "", "fr", "en")


def _picture(n: int) -> bytes:
    from laion_hf.testing.synthetic import sample

    return sample(n, size=64, p_overlay=0.0).encode(quality=95)


def make_image_shards(
    directory: Path, shards: int = 2, per_shard: int = 10, duplicate_every: int = 0, same_image_every: int = 0
) -> list[dict]:
    """Write ``shards`` shards of ``per_shard`` samples with language, punsafe and hash columns; return all rows.

    Row ``i`` of the run gets punsafe ``i / total`` so thresholds split the rows
    predictably; every ``duplicate_every``-th row repeats an earlier (url, caption).
    A failed download (in the sidecar only) is added to each shard, as img2dataset does.
    """
    directory.mkdir(parents=True, exist_ok=True)
    total = shards * per_shard
    rows = []
    for s in range(shards):
        records = []
        for i in range(per_shard):
            n = s * per_shard + i
            source = n - 1 if duplicate_every and n % duplicate_every == duplicate_every - 1 else n
            url, caption = f"http://images.test/{source}.jpg", f"a picture number {source}"
            key = f"{s:05d}{i:04d}"
            records.append(
                {
                    "url": url,
                    "caption": caption,
                    "key": key,
                    "status": "success",
                    "language": LANGUAGES[n % len(LANGUAGES)],
                    "punsafe": n / total,
                    "hash": laion_hash(url, caption),
                    "image": (
                        _picture(n - 2 if n >= 2 and n % same_image_every == same_image_every - 1 else n)
                        if same_image_every
                        else f"image-bytes-{n}".encode() * 20
                    ),
                }
            )
        write_samples(
            str(directory / f"{s:05d}.tar"),
            (
                (r["key"], {"jpg": r["image"], "txt": r["caption"].encode(), "json": json.dumps({"key": r["key"]}).encode()})
                for r in records
            ),
        )
        failed = {"url": f"http://images.test/missing-{s}.jpg", "caption": "never downloaded", "key": f"{s:05d}9999",
                  "status": "failed_to_download", "language": "en", "punsafe": None, "hash": 0}
        table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "image"} for r in records] + [failed])
        table = table.set_column(table.column_names.index("punsafe"), "punsafe", table["punsafe"].cast(pa.float32()))
        pq.write_table(table, directory / f"{s:05d}.parquet")
        (directory / f"{s:05d}_stats.json").write_text(json.dumps({"count": per_shard + 1, "successes": per_shard}))
        rows.extend(records)
    return rows


def make_scene_shards(directory: Path, count: int = 48, shards: int = 2) -> list[dict]:
    """img2dataset-layout shards of synthetic scenes as a download would leave them; return the rows.

    Captions rotate through en / de / fr / es and one row in four is empty-language; every
    fifth caption describes another scene (a pair the CLIP filter must drop); every seventh
    image shows the unsafe motif.
    """
    from laion_hf.testing.synthetic import mismatched_caption, sample

    directory.mkdir(parents=True, exist_ok=True)
    languages = ("en", "de", "fr", "es")
    rows = []
    per_shard = -(-count // shards)
    for s in range(shards):
        records = []
        for i in range(per_shard):
            n = s * per_shard + i
            if n >= count:
                break
            scene = sample(n, size=96, unsafe=n % 7 == 3, watermark=False, p_overlay=0.0)
            language = languages[n % 4]
            caption = mismatched_caption(scene.attributes, language, seed=n) if n % 5 == 4 else scene.captions[language]
            url = f"http://images.test/scene/{n}.jpg"
            records.append({
                "url": url, "caption": caption, "key": f"{s:05d}{i:04d}", "status": "success",
                "language": "" if n % 4 == 3 and n % 8 == 7 else language, "hash": laion_hash(url, caption),
                "matched": n % 5 != 4, "unsafe": scene.unsafe, "image": scene.encode(quality=95),
            })
        write_samples(
            str(directory / f"{s:05d}.tar"),
            ((r["key"], {"jpg": r["image"], "txt": r["caption"].encode(), "json": json.dumps({"key": r["key"]}).encode()})
             for r in records),
        )
        pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "image"} for r in records]),
                       directory / f"{s:05d}.parquet")
        rows.extend(records)
    return rows
