"""Drop (url, caption) pairs repeated across a run's files: a hash-partitioned shuffle in three maps.

Within a file the extractor keeps an exact set of the pairs it has written (a
WAT file holds at most a few hundred thousand pairs). Across a run the pairs of
all files do not fit in one memory, so the extract step runs the shuffle a
cluster would, on files every worker reads, as three maps any runner schedules
(:mod:`laion_hf.steps.extract`). Files are cut into groups of consecutive
files and keys into partitions by their top bits, both sized from the files'
pair counts (:meth:`PairShuffle.plan`) so that no unit holds more than a few
million pairs, however big the run:

1. :func:`write_keys`, one unit per group: every pair gets a 128-bit key
   (MurmurHash3 of ``url + "\\0" + caption``; the separator keeps ``("ab", "c")``
   and ``("a", "bc")`` apart). The group's keys file holds one Arrow record
   batch per partition: ``(hi, lo, file, row)``.
2. :func:`find_duplicates`, one unit per partition: that partition's batch of
   every keys file, sorted by (key, file, row); every row after the first of its
   key repeats an earlier pair. The first occurrence in input order wins, so the
   result depends neither on the partitioning nor on who ran what. Written as
   one batch per group, sorted by (file, row).
3. :func:`group_duplicates`, inside the unit that rewrites a group's files: that
   group's batch of every partition's duplicates.

Memory: a group's or a partition's pairs (24 bytes each), a group's duplicates
in the last map. The exchange is :mod:`laion_hf.io.shuffle`'s: one file per
unit, one batch per destination.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.io.atomic import join
from laion_hf.io.shuffle import consecutive_groups, group_members, power_of_two, read_partition, write_partitioned

KEYS_SCHEMA = pa.schema([("hi", pa.uint64()), ("lo", pa.uint64()), ("file", pa.int32()), ("row", pa.int32())])
DUPLICATES_SCHEMA = pa.schema([("file", pa.int32()), ("row", pa.int32())])
PAIRS_PER_UNIT = 4_000_000  # ~100 MB of keys: what one map or reduce of a planned shuffle holds
_MASK64 = (1 << 64) - 1


def pair_keys(urls: Sequence[str], captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """128-bit keys of (url, caption) pairs as two uint64 arrays (high, low halves)."""
    hi = np.empty(len(urls), dtype=np.uint64)
    lo = np.empty(len(urls), dtype=np.uint64)
    hash128 = mmh3.hash128
    for i, (url, caption) in enumerate(zip(urls, captions)):
        key = hash128(f"{url}\0{caption}".encode("utf-8", "surrogatepass"))
        hi[i] = key >> 64
        lo[i] = key & _MASK64
    return hi, lo


@dataclass(frozen=True)
class PairShuffle:
    """One run's cross-file dedup: its files (parquet with ``url``, ``caption``, in input order), where its groups
    of consecutive files start, how many partitions, and the scratch folder every unit reads and writes."""

    files: tuple[str, ...]
    work_dir: str
    partitions: int = 64
    group_starts: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if self.partitions < 2 or self.partitions & (self.partitions - 1):
            raise ValueError(f"partitions must be a power of two >= 2, got {self.partitions}")
        if self.group_starts[0] != 0 or list(self.group_starts) != sorted(set(self.group_starts)):
            raise ValueError(f"group starts must rise from 0, got {self.group_starts}")

    @classmethod
    def plan(cls, files: Sequence[str], pairs: Sequence[int], work_dir: str,
             pairs_per_unit: int = PAIRS_PER_UNIT) -> PairShuffle:
        """Groups of consecutive files and partitions sized so no unit holds much more than
        ``pairs_per_unit`` pairs (``pairs``: each file's count), whatever the size of the run."""
        partitions = max(2, power_of_two(sum(pairs) / pairs_per_unit))
        return cls(tuple(files), work_dir, partitions, consecutive_groups(pairs, pairs_per_unit))

    @property
    def groups(self) -> int:
        return len(self.group_starts)

    def group_files(self, group: int) -> range:
        """Indices of the consecutive files in ``group``."""
        return group_members(self.group_starts, len(self.files), group)

    def keys_path(self, group: int) -> str:
        return join(self.work_dir, "keys", f"group-{group:05d}.arrow")

    def duplicates_path(self, partition: int) -> str:
        return join(self.work_dir, "duplicates", f"partition-{partition:05d}.arrow")


def write_keys(group: int, shuffle: PairShuffle) -> dict[str, Any]:
    """Map: the keys of a group's pairs, one batch per partition; the pair count."""
    shift = np.uint64(64 - shuffle.partitions.bit_length() + 1)
    parts = []
    for file in shuffle.group_files(group):
        with fsspec.open(shuffle.files[file], "rb") as source:
            table = pq.read_table(source, columns=["url", "caption"])
        hi, lo = pair_keys(table["url"].to_pylist(), table["caption"].to_pylist())
        parts.append((hi, lo, np.full(len(hi), file, np.int32), np.arange(len(hi), dtype=np.int32)))
    hi, lo, file, row = (np.concatenate(column) for column in zip(*parts))
    keys = pa.table([hi, lo, file, row], schema=KEYS_SCHEMA)
    write_partitioned(shuffle.keys_path(group), keys, (hi >> shift).astype(np.int64), shuffle.partitions)
    return {"pairs": int(len(hi))}


def find_duplicates(partition: int, shuffle: PairShuffle) -> dict[str, Any]:
    """Reduce: the rows of one partition that repeat an earlier pair, one batch per group; how many."""
    keys = read_partition([shuffle.keys_path(group) for group in range(shuffle.groups)], partition, KEYS_SCHEMA)
    hi, lo, file, row = (keys[name].to_numpy() for name in KEYS_SCHEMA.names)
    order = np.lexsort((row, file, lo, hi))
    hi, lo = hi[order], lo[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
    file, row = file[order][repeat], row[order][repeat]
    group_of_file = np.repeat(np.arange(shuffle.groups), np.diff([*shuffle.group_starts, len(shuffle.files)]))
    duplicates = pa.table([file, row], schema=DUPLICATES_SCHEMA)
    write_partitioned(shuffle.duplicates_path(partition), duplicates, group_of_file[file], shuffle.groups)
    return {"duplicates": int(len(file))}


def group_duplicates(group: int, shuffle: PairShuffle) -> dict[int, np.ndarray]:
    """For each file of ``group`` (by index), the sorted rows that repeat an earlier pair of the run."""
    found = read_partition([shuffle.duplicates_path(p) for p in range(shuffle.partitions)], group, DUPLICATES_SCHEMA)
    file, row = found["file"].to_numpy(), found["row"].to_numpy()
    order = np.lexsort((row, file))
    file, row = file[order], row[order]
    files = shuffle.group_files(group)
    bounds = np.searchsorted(file, np.arange(files.start, files.stop + 1))
    return {index: row[start:end] for index, start, end in zip(files, bounds[:-1], bounds[1:])}

