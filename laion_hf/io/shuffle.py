"""The all-to-all exchange of a shuffle, through files every worker can read.

A map unit writes one Arrow IPC file holding a record batch per destination
(:func:`write_partitioned`); a reduce unit reads its batch of every such file
(:func:`read_partition`). ``units x destinations`` batches in all, as in any
all-to-all shuffle; a local file is memory-mapped, so a reduce reads only the
pages of its own batches. Used by extract's (url, caption) dedup and by the
dedup step's decision.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from laion_hf.io.atomic import atomic_path, filesystem

_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: spreads sequential or clustered ids over the top bits


def consecutive_groups(counts: Sequence[int], per_unit: int) -> tuple[int, ...]:
    """Where each group of consecutive inputs starts (the first at 0), so that a group holds at most ``per_unit``
    of their ``counts`` (or a single input bigger than that): the map units of a shuffle."""
    starts, held = [0], 0
    for index, count in enumerate(counts):
        if held and held + count > per_unit:
            starts.append(index)
            held = 0
        held += count
    return tuple(starts)


def group_members(starts: Sequence[int], inputs: int, group: int) -> range:
    """The inputs of one group of :func:`consecutive_groups`' result, out of ``inputs`` in all."""
    ends = (*starts[1:], inputs)
    return range(starts[group], ends[group])


def power_of_two(units: float) -> int:
    """The least power of two (at least 1) not below ``units``: a partition count."""
    partitions = 1
    while partitions < units:
        partitions *= 2
    return partitions


def partition_of(values: np.ndarray, partitions: int) -> np.ndarray:
    """The partition (``0 <= p < partitions``, a power of two) of each uint64 value, by its mixed top bits."""
    if partitions == 1:
        return np.zeros(len(values), np.int64)
    bits = partitions.bit_length() - 1
    with np.errstate(over="ignore"):
        return ((values.astype(np.uint64) * _MIX) >> np.uint64(64 - bits)).astype(np.int64)


def write_partitioned(path: str, table: pa.Table, partition: np.ndarray, partitions: int) -> None:
    """Write ``table`` to ``path`` (atomically) as ``partitions`` batches: batch ``p`` holds the rows whose
    ``partition`` is ``p``, in their order in ``table``."""
    if partitions == 1:
        parts = [table]
    else:
        # A stable sort of small ints is numpy's radix sort: linear, where a 64-bit key would be a merge sort.
        order = np.argsort(partition.astype(np.uint16 if partitions <= 1 << 16 else np.int64), kind="stable")
        bounds = np.searchsorted(partition[order], np.arange(partitions + 1))
        ordered = table.take(pa.array(order, pa.int64()))
        parts = [ordered.slice(start, end - start) for start, end in zip(bounds[:-1], bounds[1:])]
    with atomic_path(path) as tmp, fsspec.open(tmp, "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        for part in parts:
            writer.write_batch(_one_batch(part))


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    if len(batches) == 1:
        return batches[0]
    return pa.RecordBatch.from_arrays([pa.array([], field.type) for field in table.schema], schema=table.schema)


def read_partition(paths: Sequence[str], partition: int, schema: pa.Schema) -> pa.Table:
    """Batch ``partition`` of every file in ``paths``, as one table."""
    batches = []
    for path in paths:
        if os.path.exists(path):
            batches.append(ipc.open_file(pa.memory_map(path)).get_batch(partition))  # keeps the mapping alive
        else:
            with fsspec.open(path, "rb") as source:
                batches.append(ipc.open_file(source).get_batch(partition))
    return pa.Table.from_batches(batches, schema)


def remove_other_runs(scratch: str, keep: str) -> None:
    """A shuffle's scratch folders are named by what they are computed from; those of other inputs can never
    be resumed: remove them."""
    fs, inner = filesystem(scratch)
    if fs.isdir(inner):
        for path in fs.ls(inner, detail=False):
            if path.rstrip("/").rsplit("/", 1)[-1] != keep:
                fs.rm(path, recursive=True)
