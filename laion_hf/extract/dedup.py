"""Drop (url, caption) pairs repeated across a run's files: a hash-partitioned shuffle in three maps.

Within a file the extractor keeps an exact set of the pairs it has written (a
WAT file holds at most a few hundred thousand pairs). Across a run the pairs of
all files do not fit in one memory, so the extract step runs the shuffle a
cluster would, on files every worker reads, as three maps any runner schedules
(:mod:`laion_hf.steps.extract`). Files are cut into ``groups`` of consecutive
files and keys into ``partitions`` by their top bits:

1. :func:`write_keys`, one unit per group: every pair gets a 128-bit key
   (MurmurHash3 of ``url + "\\0" + caption``; the separator keeps ``("ab", "c")``
   and ``("a", "bc")`` apart). The group's keys file holds, for each of its
   files, one Arrow record batch per partition: ``(hi, lo, file, row)``.
2. :func:`find_duplicates`, one unit per partition: that partition's batches of
   every keys file, sorted by (key, file, row); every row after the first of its
   key repeats an earlier pair. The first occurrence in input order wins, so the
   result depends neither on the partitioning nor on who ran what. Written as
   one batch per group, sorted by (file, row).
3. :func:`group_duplicates`, inside the unit that rewrites a group's files: that
   group's batch of every partition's duplicates.

Memory: one file's pairs in a map, one partition of the run (24 bytes a pair /
``partitions``) in a reduce, one group's duplicates in the last map. Each map
reads ``partitions`` (or ``groups``) record batches, as in any all-to-all shuffle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from laion_hf.io.atomic import atomic_path, join

KEYS_SCHEMA = pa.schema([("hi", pa.uint64()), ("lo", pa.uint64()), ("file", pa.int32()), ("row", pa.int32())])
DUPLICATES_SCHEMA = pa.schema([("file", pa.int32()), ("row", pa.int32())])
MAX_GROUPS = 256  # bounds the batches a reduce reads per partition: groups x files-per-group
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
    """One run's cross-file dedup: its files (parquet with ``url``, ``caption``, in input order), how they are
    cut, and the scratch folder (``work_dir``) every unit reads and writes."""

    files: tuple[str, ...]
    work_dir: str
    partitions: int = 64
    max_groups: int = MAX_GROUPS

    def __post_init__(self) -> None:
        if self.partitions < 2 or self.partitions & (self.partitions - 1):
            raise ValueError(f"partitions must be a power of two >= 2, got {self.partitions}")

    @property
    def groups(self) -> int:
        return min(len(self.files), self.max_groups)

    def group_files(self, group: int) -> range:
        """Indices of the consecutive files in ``group`` (sizes differ by at most one)."""
        size, extra = divmod(len(self.files), self.groups)
        start = group * size + min(group, extra)
        return range(start, start + size + (group < extra))

    def keys_path(self, group: int) -> str:
        return join(self.work_dir, "keys", f"group-{group:05d}.arrow")

    def duplicates_path(self, partition: int) -> str:
        return join(self.work_dir, "duplicates", f"partition-{partition:05d}.arrow")


def write_keys(group: int, shuffle: PairShuffle) -> dict[str, Any]:
    """Map: the keys of a group's pairs, one batch per (file, partition) in that order; the pair count."""
    shift = np.uint64(64 - shuffle.partitions.bit_length() + 1)
    pairs = 0
    with atomic_path(shuffle.keys_path(group)) as tmp, fsspec.open(tmp, "wb") as sink:
        with ipc.new_file(sink, KEYS_SCHEMA) as writer:
            for file in shuffle.group_files(group):
                with fsspec.open(shuffle.files[file], "rb") as source:
                    table = pq.read_table(source, columns=["url", "caption"])
                hi, lo = pair_keys(table["url"].to_pylist(), table["caption"].to_pylist())
                partition = (hi >> shift).astype(np.int64)
                order = np.argsort(partition, kind="stable")
                bounds = np.searchsorted(partition[order], np.arange(shuffle.partitions + 1))
                rows = order.astype(np.int32)
                for start, end in zip(bounds[:-1], bounds[1:]):
                    take = order[start:end]
                    columns = [hi[take], lo[take], np.full(len(take), file, np.int32), rows[start:end]]
                    writer.write_batch(pa.record_batch(columns, schema=KEYS_SCHEMA))
                pairs += table.num_rows
    return {"pairs": pairs}


def find_duplicates(partition: int, shuffle: PairShuffle) -> dict[str, Any]:
    """Reduce: the rows of one partition that repeat an earlier pair, one batch per group; how many."""
    parts = []
    for group in range(shuffle.groups):
        files = len(shuffle.group_files(group))
        parts += _read_batches(shuffle.keys_path(group), [f * shuffle.partitions + partition for f in range(files)])
    keys = pa.Table.from_batches(parts, KEYS_SCHEMA)
    hi, lo, file, row = (keys[name].to_numpy() for name in KEYS_SCHEMA.names)
    order = np.lexsort((row, file, lo, hi))
    hi, lo = hi[order], lo[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
    file, row = file[order][repeat], row[order][repeat]
    by_position = np.lexsort((row, file))
    file, row = file[by_position], row[by_position]
    first_files = np.array([shuffle.group_files(g).start for g in range(shuffle.groups)] + [len(shuffle.files)])
    bounds = np.searchsorted(file, first_files)
    with atomic_path(shuffle.duplicates_path(partition)) as tmp, fsspec.open(tmp, "wb") as sink:
        with ipc.new_file(sink, DUPLICATES_SCHEMA) as writer:
            for start, end in zip(bounds[:-1], bounds[1:]):
                writer.write_batch(pa.record_batch([file[start:end], row[start:end]], schema=DUPLICATES_SCHEMA))
    return {"duplicates": int(len(file))}


def group_duplicates(group: int, shuffle: PairShuffle) -> dict[int, np.ndarray]:
    """For each file of ``group`` (by index), the sorted rows that repeat an earlier pair of the run."""
    parts = [
        batch for p in range(shuffle.partitions) for batch in _read_batches(shuffle.duplicates_path(p), [group])
    ]
    found = pa.Table.from_batches(parts, DUPLICATES_SCHEMA)
    file, row = found["file"].to_numpy(), found["row"].to_numpy()
    return {index: np.sort(row[file == index]) for index in shuffle.group_files(group)}


def _read_batches(path: str, indices: Sequence[int]) -> list[pa.RecordBatch]:
    """Some record batches of an Arrow IPC file: memory-mapped when local (only their pages are read)."""
    if os.path.exists(path):
        reader = ipc.open_file(pa.memory_map(path))  # the batches keep the mapping alive
        return [reader.get_batch(i) for i in indices]
    with fsspec.open(path, "rb") as source:
        reader = ipc.open_file(source)
        return [reader.get_batch(i) for i in indices]
