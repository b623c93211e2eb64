"""Find the shards of a LAION copy: metadata parquet, optionally with img2dataset tars beside it.

Two layouts occur in the wild and both are a directory of shards:
- LAION's metadata: ``part-00000-<uuid>-c000.snappy.parquet`` (Spark output,
  with a hidden Hadoop checksum ``.part-...parquet.crc`` beside each part and
  an empty ``_SUCCESS``);
- an img2dataset download: ``00000.parquet`` + ``00000.tar`` + ``00000_stats.json``.
A shard is named by its parquet file's stem, which is also its output name.
Hidden and ``_``-prefixed files are never shards (Hadoop's convention, which
pyarrow and Spark follow too: checksums, ``_SUCCESS``, ``_metadata`` summaries),
nor is ``NNNNN_removed.parquet`` (the removed rows a stage run audits beside
its output shard).
"""

from __future__ import annotations

from dataclasses import dataclass

from laion_hf.io.atomic import filesystem, join

REMOVED_SUFFIX = "_removed.parquet"


@dataclass(frozen=True)
class Shard:
    """One unit of work: a parquet file and, in img2dataset layout, its tar and stats."""

    name: str
    parquet: str
    tar: str | None = None
    stats: str | None = None


def _stem(filename: str) -> str:
    for suffix in (".snappy.parquet", ".parquet"):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def discover_shards(directory: str) -> list[Shard]:
    """All shards in ``directory``, sorted by name. Raises FileNotFoundError if it has none."""
    fs, inner = filesystem(directory)
    if not fs.isdir(inner):
        raise FileNotFoundError(f"{directory}: not a directory")
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(inner, detail=False)}
    shards = []
    for filename in sorted(names):
        if not filename.endswith(".parquet") or filename.startswith((".", "_")) or filename.endswith(REMOVED_SUFFIX):
            continue
        stem = _stem(filename)
        tar = f"{stem}.tar" if f"{stem}.tar" in names else None
        stats = f"{stem}_stats.json" if f"{stem}_stats.json" in names else None
        shards.append(
            Shard(
                name=stem,
                parquet=join(directory, filename),
                tar=join(directory, tar) if tar else None,
                stats=join(directory, stats) if stats else None,
            )
        )
    if not shards:
        raise FileNotFoundError(f"{directory}: no parquet shards found")
    return shards
