"""Samples/s reading a published folder: ``datasets`` streaming (WebDataset and Parquet+images) vs ``webdataset``.

    .venv/bin/python bench/stream.py [--shards 8] [--per-shard 2000] [--runs 5] [--decode-images]

One run writes a Hub-layout folder (laion-hf publish, local) as WebDataset and
the same samples as Parquet with image bytes (``--format parquet
--include-images``), then times each reader over the same samples in this one
process (one interpreter), one after the other in every round (A B C ... A B C
...), ``--runs`` rounds after a warm-up. Samples: a 64x64 JPEG (16 distinct
images), a caption ``"a picture number NNNNNNNNN"`` (ASCII) and img2dataset's
JSON. Every reader decodes ``txt`` to str and ``json`` to a dict; images stay
bytes unless ``--decode-images`` (then PIL, pixels loaded). ``tarfile`` is a
plain loop over the tars (the floor of a Python tar reader). The ``+ fix``
lines are ``datasets`` with the change :mod:`webdataset_fix` proposes upstream,
patched into this process only while they run. Prints min/median/max and the
ratio of medians against webdataset, per wall second and per CPU second of this
process (the readers are single-threaded; CPU time is what a loaded, shared
machine distorts least). No torch here: nothing to set a thread count for.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_folder(root: Path, shards: int, per_shard: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from laion_hf.hub.publish import publish_folder
    from laion_hf.io.tar import write_samples

    source = root / "source"
    source.mkdir()
    images = []
    for i in range(16):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (i * 15, 80, 160)).save(buffer, "JPEG")
        images.append(buffer.getvalue())
    for shard in range(shards):
        rows, samples = [], []
        for index in range(per_shard):
            key = f"{shard:05d}{index:04d}"
            meta = {"url": f"http://example.com/{key}.jpg", "caption": f"a picture number {key}", "key": key, "status": "success", "width": 64, "height": 64}
            rows.append(meta)
            samples.append((key, {"jpg": images[index % 16], "txt": meta["caption"].encode(), "json": json.dumps(meta).encode()}))
        write_samples(str(source / f"{shard:05d}.tar"), samples)
        pq.write_table(pa.Table.from_pylist(rows), source / f"{shard:05d}.parquet")
    folder = root / "folder"
    publish_folder({"bench": str(source)}, folder, family="laion5b", target_shard_bytes=1, plots=False)
    publish_folder({"bench": str(source)}, root / "folder-parquet", family="laion5b", format="parquet", include_images=True, target_shard_bytes=1, plots=False)
    return folder


def read_datasets(folder: Path, decode_images: bool) -> int:
    import datasets

    stream = datasets.load_dataset(str(folder), "bench", split="train", streaming=True)
    if not decode_images:
        stream = stream.decode(False)
    count = 0
    for sample in stream:
        if decode_images:
            sample["jpg"].load()
        count += 1
    return count


def read_datasets_parquet(folder: Path, decode_images: bool) -> int:
    """The same samples published as Parquet with image bytes (``--format parquet --include-images``)."""
    import datasets

    stream = datasets.load_dataset(str(folder.parent / "folder-parquet"), "bench", split="train", streaming=True)
    if not decode_images:
        stream = stream.decode(False)
    count = 0
    for sample in stream:
        if decode_images:
            sample["image"].load()
        count += 1
    return count


def read_webdataset(folder: Path, decode_images: bool) -> int:
    import webdataset as wds

    urls = sorted(str(p) for p in (folder / "bench").glob("*.tar"))
    dataset = wds.WebDataset(urls, shardshuffle=False)
    pipeline = dataset.decode("pil") if decode_images else dataset.decode()
    return sum(1 for _ in pipeline)


def read_tarfile(folder: Path, decode_images: bool) -> int:
    from PIL import Image

    count = 0
    for path in sorted((folder / "bench").glob("*.tar")):
        with tarfile.open(path, "r|") as tar:
            key, sample = None, {}
            for info in tar:
                member_key, extension = info.name.split(".", 1)
                if key is not None and member_key != key:
                    count += 1
                    sample = {}
                key = member_key
                data = tar.extractfile(info).read()
                if extension == "txt":
                    sample[extension] = data.decode()
                elif extension == "json":
                    sample[extension] = json.loads(data)
                elif decode_images:
                    image = Image.open(io.BytesIO(data))
                    image.load()
                    sample[extension] = image
                else:
                    sample[extension] = data
            count += key is not None
    return count


def with_fix(**changes: bool):
    """:func:`read_datasets` with (part of) the proposed ``datasets`` fix patched in for the duration of the read."""

    def read(folder: Path, decode_images: bool) -> int:
        from webdataset_fix import patched

        with patched(**changes):
            return read_datasets(folder, decode_images)

    return read


READERS = {
    "datasets streaming, WebDataset repo": read_datasets,
    "  + fix: lean tar walk": with_fix(arrow_builder=False),
    "  + fix: Arrow builder": with_fix(tar_walk=False),
    "  + fix: both": with_fix(),
    "datasets streaming, Parquet+images": read_datasets_parquet,
    "webdataset": read_webdataset,
    "tarfile": read_tarfile,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--per-shard", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--decode-images", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp), args.shards, args.per_shard)
        expected = args.shards * args.per_shard
        wall: dict[str, list[float]] = {name: [] for name in READERS}
        cpu: dict[str, list[float]] = {name: [] for name in READERS}
        for reader in READERS.values():  # warm-up: imports, page cache
            reader(folder, args.decode_images)
        for _ in range(args.runs):
            for name, reader in READERS.items():  # interleaved, so machine noise hits all readers alike
                start, start_cpu = time.perf_counter(), time.process_time()
                count = reader(folder, args.decode_images)
                elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
                if count != expected:
                    raise SystemExit(f"{name} read {count} samples, expected {expected}")
                wall[name].append(count / elapsed)
                cpu[name].append(count / elapsed_cpu)
    mode = "images decoded (PIL)" if args.decode_images else "images as bytes"
    print(f"{expected:,} samples in {args.shards} shards, {mode}, {args.runs} runs; min / median / max")
    for label, rates in (("samples per wall second", wall), ("samples per CPU second (robust to a shared machine)", cpu)):
        print(f" {label}")
        baseline = statistics.median(rates["webdataset"])
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"  {name:38s} {min(values):>9,.0f} {median:>9,.0f} {max(values):>9,.0f}   {median / baseline:.2f}x webdataset")


if __name__ == "__main__":
    main()
