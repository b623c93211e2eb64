"""Drop repeated (url, caption) pairs: exactly within a file, by a partitioned hash shuffle across a run.

Within a file the extractor keeps an exact set of the pairs it has written (a
WAT file holds at most a few hundred thousand pairs). Across a run the pairs of
all files do not fit in memory, so :func:`find_global_duplicates` does what a
cluster shuffle does, on disk:

1. *map*: every pair gets a 128-bit key (MurmurHash3 of ``url + "\\0" + caption``;
   the separator keeps ``("ab", "c")`` and ``("a", "bc")`` apart). The top bits
   of the key pick one of ``partitions`` bucket files, which receive
   ``(key, shard index, row)``.
2. *reduce*: each bucket alone is loaded, sorted by (key, shard, row), and every
   row after the first of its key is a duplicate. The first occurrence in input
   order wins, so the result does not depend on how many workers ran.

Memory is one bucket (32 bytes a pair, total / ``partitions``) plus 4 bytes per
duplicate. On Ray, the same two steps run for a whole crawl: map tasks emit
``(key, shard, row)`` hash-partitioned by the key prefix, one reduce task per
partition returns its duplicate rows grouped by shard, and one task per shard
filters it; no step needs more than its partition in memory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import fsspec
import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

_BUCKET_SCHEMA = pa.schema(
    [("hi", pa.uint64()), ("lo", pa.uint64()), ("shard", pa.int32()), ("row", pa.int32())]
)
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


class _Buckets:
    """Append-only Arrow IPC files, one per hash partition, in ``work_dir``."""

    def __init__(self, work_dir: str, partitions: int):
        self.work_dir = work_dir
        self.shift = np.uint64(64 - int(np.log2(partitions)))
        self.paths = [os.path.join(work_dir, f"bucket-{i:04d}.arrow") for i in range(partitions)]
        self._writers = [ipc.new_file(path, _BUCKET_SCHEMA) for path in self.paths]

    def add(self, shard: int, hi: np.ndarray, lo: np.ndarray) -> None:
        bucket = (hi >> self.shift).astype(np.int64)
        rows = np.arange(len(hi), dtype=np.int32)
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(len(self._writers) + 1))
        for index, writer in enumerate(self._writers):
            take = order[bounds[index] : bounds[index + 1]]
            if len(take):
                writer.write_batch(
                    pa.record_batch(
                        [hi[take], lo[take], np.full(len(take), shard, np.int32), rows[take]],
                        schema=_BUCKET_SCHEMA,
                    )
                )

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


def _bucket_duplicates(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(shard, row) of every pair in one bucket that repeats an earlier pair (input order)."""
    table = ipc.open_file(path).read_all()
    if table.num_rows == 0:
        return np.empty(0, np.int32), np.empty(0, np.int32)
    hi, lo, shard, row = (table[name].to_numpy() for name in ("hi", "lo", "shard", "row"))
    order = np.lexsort((row, shard, lo, hi))
    hi, lo = hi[order], lo[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
    return shard[order][repeat], row[order][repeat]


def find_global_duplicates(shards: Sequence[str], work_dir: str, partitions: int = 64) -> list[np.ndarray]:
    """For each parquet shard (in input order), the sorted row numbers that repeat an earlier pair.

    ``partitions`` must be a power of two >= 2; ``work_dir`` (local) is created and removed.
    """
    if partitions < 2 or partitions & (partitions - 1):
        raise ValueError(f"partitions must be a power of two >= 2, got {partitions}")
    os.makedirs(work_dir, exist_ok=True)
    try:
        buckets = _Buckets(work_dir, partitions)
        try:
            for index, path in enumerate(shards):
                with fsspec.open(path, "rb") as source:
                    table = pq.read_table(source, columns=["url", "caption"])
                hi, lo = pair_keys(table["url"].to_pylist(), table["caption"].to_pylist())
                buckets.add(index, hi, lo)
        finally:
            buckets.close()
        per_shard: list[list[np.ndarray]] = [[] for _ in shards]
        for path in buckets.paths:
            shard, row = _bucket_duplicates(path)
            for index in np.unique(shard):
                per_shard[index].append(row[shard == index])
        return [np.sort(np.concatenate(rows)) if rows else np.empty(0, np.int32) for rows in per_shard]
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
