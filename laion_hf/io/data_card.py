"""The README.md of an output folder: a YAML ``configs:`` naming its data files.

Without it, ``datasets.load_dataset(OUTPUT)`` guesses the builder from the most
common file extension in the folder, and beside the shards lie img2dataset's
``_stats.json``, reports, removed-row audits and scratch parquet: it picks JSON
(or reads the audits as rows) and fails with a ``CastError``. The card names the
shard parquet files exactly (the shards :func:`laion_hf.io.shards.discover_shards`
finds), by the shortest glob that matches them and nothing else in the folder,
else one by one. The tars beside them stay readable by ``webdataset`` and
``load_dataset("webdataset", data_files=...)``.
"""

from __future__ import annotations

import fnmatch
import re

import fsspec
import yaml

from laion_hf.io.atomic import atomic_path, filesystem, join
from laion_hf.io.shards import discover_shards

README = "README.md"
#: First line of a card written here, so an existing README someone else wrote is never overwritten.
MARK = "<!-- written by laion-hf: the data files of this folder -->"


def _patterns(shard_files: list[str]) -> list[str]:
    """Globs that may name exactly ``shard_files``: everything, then digit names (img2dataset), then Spark parts."""
    candidates = ["*.parquet"]
    stems = {name.removesuffix(".parquet") for name in shard_files}
    if all(stem.isdigit() for stem in stems) and len({len(stem) for stem in stems}) == 1:
        candidates.append("[0-9]" * len(next(iter(stems))) + ".parquet")
    if all(re.fullmatch(r"part-\d+-.*", stem) for stem in stems):
        candidates.append("part-*.parquet")
    return candidates


def data_files(names: list[str], shard_files: list[str]) -> str | list[str]:
    """The ``path`` of the train split: a glob matching exactly ``shard_files`` among ``names``, else the list."""
    wanted = sorted(shard_files)
    for pattern in _patterns(shard_files):
        if sorted(fnmatch.filter(names, pattern)) == wanted:
            return pattern
    return wanted


def render(path: str | list[str], title: str) -> str:
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": path}], "default": True}]
    front = yaml.safe_dump({"configs": configs}, sort_keys=False)
    return (
        f"---\n{front}---\n{MARK}\n\n# {title}\n\n"
        "One row per sample in the shard parquet files named above: `datasets.load_dataset(\"<this folder>\")`, "
        "DuckDB `read_parquet`. Where `NNNNN.tar` shards lie beside them, they hold the images "
        "(WebDataset: `KEY.jpg|png|webp`, `KEY.txt`, `KEY.json`) for the `webdataset` library. "
        "laion-hf's own bookkeeping is in the hidden `.laion-hf/` folder.\n"
    )


def write_data_card(output_dir: str) -> str | None:
    """Write ``OUTPUT/README.md`` declaring the folder's shard parquet files; its path, or None.

    None when the folder holds no shards, or when a README.md that laion-hf did
    not write is already there (it is left alone).
    """
    fs, inner = filesystem(output_dir)
    if not fs.isdir(inner):
        return None
    try:
        shards = discover_shards(output_dir)
    except FileNotFoundError:
        return None
    path = join(output_dir, README)
    if fs.exists(f"{inner}/{README}"):
        with fsspec.open(path, "r", encoding="utf-8") as f:
            if MARK not in f.read():
                return None
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(inner, detail=False)]
    shard_files = [shard.parquet.rsplit("/", 1)[-1] for shard in shards]
    text = render(data_files(names, shard_files), inner.rstrip("/").rsplit("/", 1)[-1])
    with atomic_path(path) as tmp, fsspec.open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return path
