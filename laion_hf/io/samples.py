"""Image shards as Arrow batches: read img2dataset-layout shards, run stages, write them back.

Every image-bearing stage (filter, score, dedup, ...) has the same shape:
stream a shard's samples as ``pa.Table`` batches (the sidecar parquet's columns
joined by key with the tar's original image bytes), let stages mark rows, and
write the kept samples to a new shard in the same layout. This module is that
shape, once:

- :func:`read_sample_batches` yields batches with the metadata columns plus
  ``image`` (original bytes, never re-encoded) and ``image_ext``;
- :class:`SampleShardWriter` writes kept samples as ``KEY.<ext>/.txt/.json``
  members (image bytes copied as they are), the metadata parquet, the
  ``_stats.json``, and the removed rows with their reason to
  ``NNNNN_removed.parquet`` (an audit trail that removal lists are made from);
- :func:`transform_shard` runs a list of stages over one shard and returns
  per-stage stats whose rows add up.
"""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any, Protocol

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laion_hf.errors import UserError
from laion_hf.io.atomic import atomic_path, join, write_json
from laion_hf.io.shards import Shard
from laion_hf.io.tar import add_member, iter_samples
from laion_hf.schema import require_columns
from laion_hf.stages.base import Stage, StageStats, alive_mask, count_reasons, split_kept

IMAGE = "image"
IMAGE_EXT = "image_ext"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class MissingSampleError(UserError):
    """A tar holds a sample that its sidecar parquet does not describe."""


def read_sample_batches(shard: Shard, batch_size: int = 256) -> Iterator[pa.Table]:
    """Stream the samples of an img2dataset-layout shard as Arrow batches, in tar order.

    Each row is the sidecar parquet row of a sample present in the tar, plus
    its original image bytes. Memory holds one shard's metadata and one batch
    of images.
    """
    if shard.tar is None:
        raise UserError(f"{shard.parquet}: no tar shard beside it ({shard.name}.tar)")
    metadata = pq.read_table(shard.parquet)
    require_columns(metadata.column_names, ["key"], shard.parquet)
    key_column = metadata.column_names[[n.lower() for n in metadata.column_names].index("key")]
    row_of = {key: i for i, key in enumerate(metadata.column(key_column).to_pylist())}

    rows: list[int] = []
    images: list[bytes] = []
    extensions: list[str] = []

    def flush() -> pa.Table:
        batch = metadata.take(pa.array(rows, pa.int64()))
        batch = batch.append_column(IMAGE, pa.array(images, pa.binary()))
        return batch.append_column(IMAGE_EXT, pa.array(extensions, pa.string()))

    for key, members in iter_samples(shard.tar):
        ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
        if ext is None:
            continue  # a sample without an image member (img2dataset never writes one)
        if key not in row_of:
            raise MissingSampleError(f"{shard.tar}: sample {key} is not in {shard.parquet}")
        rows.append(row_of[key])
        images.append(members[ext])
        extensions.append(ext)
        if len(rows) >= batch_size:
            yield flush()
            rows, images, extensions = [], [], []
    if rows:
        yield flush()


def _json_value(value: Any) -> Any:
    return None if isinstance(value, bytes) else value


class Sidecar(Protocol):
    """Per-shard extra output beside the samples (e.g. the filter's clip-retrieval style embeddings).

    ``take`` sees each marked batch before it is written and returns what to
    write; ``close`` runs only after the shard's own files are committed, so a
    crash in between re-runs the shard.
    """

    def take(self, batch: pa.Table) -> pa.Table: ...

    def close(self) -> None: ...


SidecarFactory = Callable[[str, str], Sidecar]  # (output_dir, shard name) -> Sidecar


class SampleShardWriter:
    """Stream kept samples of one shard into img2dataset layout, plus the removed rows.

    A context manager: tar and parquet are written under temporary names as
    batches arrive and renamed into place only when the block exits cleanly, so
    a crash leaves nothing that looks complete and memory holds one batch. An
    optional :class:`Sidecar` sees every batch first and is closed last.
    """

    def __init__(self, output_dir: str, name: str, sidecar: Sidecar | None = None) -> None:
        self.output_dir = output_dir
        self.name = name
        self.sidecar = sidecar
        self.kept = 0
        self.removed = 0

    def __enter__(self) -> SampleShardWriter:
        self._stack = ExitStack()
        tar_tmp = self._stack.enter_context(atomic_path(join(self.output_dir, f"{self.name}.tar")))
        self._tar_file = self._stack.enter_context(fsspec.open(tar_tmp, "wb"))
        self._tar = tarfile.open(fileobj=self._tar_file, mode="w", format=tarfile.GNU_FORMAT)
        self._parquet_tmp = self._stack.enter_context(atomic_path(join(self.output_dir, f"{self.name}.parquet")))
        self._parquet: pq.ParquetWriter | None = None
        self._removed_writer: pq.ParquetWriter | None = None
        return self

    def write(self, batch: pa.Table) -> None:
        """Append a marked batch: kept rows to tar + parquet, removed rows (no image) to the audit file."""
        if self.sidecar is not None:
            batch = self.sidecar.take(batch)
        kept, removed = split_kept(batch)
        metadata = kept.drop_columns([c for c in (IMAGE, IMAGE_EXT) if c in kept.column_names])
        rows = metadata.to_pylist()
        for row, image, ext in zip(rows, kept[IMAGE].to_pylist(), kept[IMAGE_EXT].to_pylist()):
            key = str(row["key"])
            meta = {k: _json_value(v) for k, v in row.items()}
            add_member(self._tar, f"{key}.{ext}", image)
            add_member(self._tar, f"{key}.txt", (row.get("caption") or "").encode("utf-8"))
            add_member(self._tar, f"{key}.json", json.dumps(meta, ensure_ascii=False, default=str).encode("utf-8"))
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._parquet_tmp, metadata.schema)
        if metadata.num_rows:  # an empty row group makes the file unreadable for `datasets` (batch size 0)
            self._parquet.write_table(metadata)
        self.kept += kept.num_rows
        if removed.num_rows:
            removed = removed.drop_columns([IMAGE]) if IMAGE in removed.column_names else removed
            if self._removed_writer is None:
                # Entered lazily: a shard that removed nothing gets no audit file.
                removed_tmp = self._stack.enter_context(
                    atomic_path(join(self.output_dir, f"{self.name}_removed.parquet"))
                )
                self._removed_writer = pq.ParquetWriter(removed_tmp, removed.schema)
            self._removed_writer.write_table(removed)
            self.removed += removed.num_rows

    def __exit__(self, *exc_info: Any) -> None:
        for writer in (self._parquet, self._removed_writer):
            if writer is not None:
                writer.close()
        if self._parquet is None:
            pq.write_table(pa.table({"key": pa.array([], pa.string())}), self._parquet_tmp)
        self._tar.close()
        self._tar_file.close()
        self._stack.__exit__(*exc_info)
        if exc_info[0] is None:
            write_json(
                join(self.output_dir, f"{self.name}_stats.json"),
                {"count": self.kept + self.removed, "successes": self.kept, "removed": self.removed},
            )
            if self.sidecar is not None:
                self.sidecar.close()


def transform_shard(
    shard: Shard,
    output_dir: str,
    stages: Sequence[Stage],
    batch_size: int = 256,
    sidecar: Sidecar | None = None,
) -> dict[str, Any]:
    """Run ``stages`` in order over one shard and write the kept samples; return per-stage stats.

    A stage's ``rows_in`` is the rows alive when it ran; the rows it newly
    marked are its ``dropped``. The returned dict is what the runner stores in
    the shard's done marker. ``sidecar`` (see :class:`Sidecar`) receives every
    marked batch before it is written, e.g. to move embedding columns into their
    own files instead of the shard's metadata.
    """
    stats = [StageStats(stage.name) for stage in stages]
    with SampleShardWriter(output_dir, shard.name, sidecar) as writer:
        for batch in read_sample_batches(shard, batch_size):
            for stage, stage_stats in zip(stages, stats):
                alive = alive_mask(batch)
                started = time.perf_counter()
                batch = stage(batch)
                stage_stats.seconds += time.perf_counter() - started
                still_alive = alive_mask(batch)
                newly_dropped = batch.filter(pc.and_(alive, pc.invert(still_alive)))
                stage_stats.add_batch(
                    rows_in=pc.sum(alive).as_py() or 0,
                    kept=pc.sum(still_alive).as_py() or 0,
                    dropped=count_reasons(newly_dropped),
                )
            writer.write(batch)
    for stage_stats in stats:
        stage_stats.check()
    return {"shard": shard.name, "stages": [s.to_dict() for s in stats]}


def load_shard_stages(recorded: dict[str, Any]) -> list[StageStats]:
    """The per-stage stats a finished shard recorded in its done marker."""
    return [StageStats.from_dict(d) for d in recorded.get("stages", [])]
