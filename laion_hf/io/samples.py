"""Image shards as Arrow batches: read img2dataset-layout shards, run stages, write them back.

Every image-bearing stage (filter, score, dedup, ...) has the same shape:
stream a shard's samples as ``pa.Table`` batches (the sidecar parquet's columns
joined by key with the tar's original image bytes), let stages mark rows, and
write the kept samples to a new shard in the same layout. This module is that
shape, once:

- :func:`image_shards` finds the shards (a parquet without its tar is an
  error, not a silent skip);
- :func:`read_sample_batches` yields batches, in key order, with the metadata
  columns of every sample row of the sidecar plus ``image`` (original bytes,
  never re-encoded) and ``image_ext``; a sample row with no image in the tar
  arrives marked ``missing-image``, and a cut tar is an error;
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
from dataclasses import dataclass
from typing import Any, Protocol

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laion_hf.core.errors import UserError, reading
from laion_hf.core.schema import require_columns, require_text_columns, resolve_columns
from laion_hf.core.stage import Stage, StageStats, alive_mask, count_reasons, mark_dropped, split_kept
from laion_hf.io.atomic import atomic_path, join, write_json
from laion_hf.io.shards import Shard, discover_shards
from laion_hf.io.tar import SampleIndex, add_member, index_samples, read_span

IMAGE = "image"
IMAGE_EXT = "image_ext"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
SUCCESS = "success"
#: The reason of a sample row (status success) whose sample has no image in the tar.
MISSING_IMAGE = "missing-image"


class MissingSampleError(UserError):
    """A tar and its sidecar disagree: a sample the sidecar does not describe as a success, or a key in two rows."""


def image_shards(directory: str) -> list[Shard]:
    """The img2dataset-layout shards of ``directory``; a parquet without its tar is refused, not skipped."""
    try:
        shards = discover_shards(directory)
    except FileNotFoundError as exc:
        raise UserError(f"{exc} (expected img2dataset-layout shards: NNNNN.tar + NNNNN.parquet)") from None
    without_tar = [s for s in shards if s.tar is None]
    if without_tar:
        raise UserError(
            f"{without_tar[0].parquet}: no tar beside it ({without_tar[0].name}.tar); {len(without_tar)} of "
            f"{len(shards)} shard(s) in {directory} have none. Image steps need img2dataset-layout shards."
        )
    return shards


def read_sidecar(shard: Shard) -> pa.Table:
    """A shard's sidecar parquet; a damaged or unreadable file is a :class:`UserError` naming it."""
    with reading(shard.parquet, "parquet shard"):
        return pq.read_table(shard.parquet)


@dataclass
class ShardIndex:
    """A shard's sidecar and tar index, checked against each other: what :func:`read_sample_batches` streams.

    ``rows`` are the sidecar's *sample rows* in key order: those whose
    ``status`` is ``success``, or every row when there is no status column
    (LAION metadata; our own stage outputs keep only successes). They are the
    shard's rows in: counted from the tar instead, a cut tar would lose rows
    without a trace. A tar sample that the sidecar does not record as a
    success, and a key in two rows, are refused (:class:`MissingSampleError`);
    a cut or damaged tar is a :class:`~laion_hf.io.tar.CorruptTarError`.
    """

    shard: Shard
    metadata: pa.Table
    keys: list[str | None]
    rows: list[int]
    members: SampleIndex

    @classmethod
    def read(cls, shard: Shard) -> ShardIndex:
        if shard.tar is None:
            raise UserError(f"{shard.parquet}: no tar shard beside it ({shard.name}.tar)")
        metadata = read_sidecar(shard)
        columns = require_columns(metadata.column_names, ["key"], shard.parquet)
        require_text_columns(metadata.schema, shard.parquet)
        keys = metadata[columns["key"]].cast(pa.string()).to_pylist()
        status = resolve_columns(metadata.column_names, ["status"])["status"]
        if status is None:
            rows = list(range(metadata.num_rows))
        else:
            success = pc.fill_null(pc.equal(metadata[status].cast(pa.string()), SUCCESS), False)
            rows = pc.indices_nonzero(success).to_pylist()
        index = cls(shard, metadata, keys, sorted(rows, key=lambda row: keys[row] or ""), index_samples(shard.tar))
        index._check()
        return index

    def _check(self) -> None:
        row_of: dict[str | None, int] = {}
        for row, key in enumerate(self.keys):
            if row_of.setdefault(key, row) != row:
                raise MissingSampleError(f"{self.shard.parquet}: key {key} is in more than one row")
        sample_keys = {self.keys[row] for row in self.rows}
        for key in self.members:
            if key not in row_of:
                raise MissingSampleError(f"{self.shard.tar}: sample {key} is not in {self.shard.parquet}")
            if key not in sample_keys:
                raise MissingSampleError(
                    f"{self.shard.tar}: sample {key} is in the tar, but {self.shard.parquet} does not record it as a success"
                )

    def image_extension(self, row: int) -> str | None:
        """The extension of the image member of a sample row, None if the tar has none."""
        members = self.members.get(self.keys[row], {})
        return next((e for e in IMAGE_EXTENSIONS if e in members), None)

    def missing_images(self) -> list[str | None]:
        """Keys of the sample rows whose image is not in the tar (in key order)."""
        return [self.keys[row] for row in self.rows if self.image_extension(row) is None]


def read_sample_batches(shard: Shard, batch_size: int = 256) -> Iterator[pa.Table]:
    """Stream the samples of an img2dataset-layout shard as Arrow batches, in key order.

    Each row is a sample row of the sidecar (see :class:`ShardIndex`) plus its
    original image bytes. A row whose sample has no image in the tar comes
    marked ``missing-image`` (image null), so it is counted as removed, never
    lost. Key order (not the tar's order, which is the order a download
    happened to finish) makes model batches, and so scores, reproducible.
    Memory holds one shard's metadata and tar index and one batch of images.
    """
    index = ShardIndex.read(shard)
    with fsspec.open(shard.tar, "rb") as raw:
        for start in range(0, len(index.rows), batch_size):
            rows = index.rows[start : start + batch_size]
            extensions = [index.image_extension(row) for row in rows]
            images = [
                read_span(raw, index.members[index.keys[row]][ext], shard.tar) if ext else None
                for row, ext in zip(rows, extensions)
            ]
            batch = index.metadata.take(pa.array(rows, pa.int64()))
            batch = batch.append_column(IMAGE, pa.array(images, pa.binary()))
            batch = batch.append_column(IMAGE_EXT, pa.array(extensions, pa.string()))
            if None in extensions:
                batch = mark_dropped(batch, pc.is_null(batch[IMAGE_EXT]), MISSING_IMAGE)
            yield batch


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
    marked are its ``dropped``. Rows that arrive marked (``missing-image``)
    count as dropped by the first stage, so its ``rows_in`` is every sample
    row of the sidecar. The returned dict is what the runner stores in
    the shard's done marker. ``sidecar`` (see :class:`Sidecar`) receives every
    marked batch before it is written, e.g. to move embedding columns into their
    own files instead of the shard's metadata.
    """
    stats = [StageStats(stage.name) for stage in stages]
    with SampleShardWriter(output_dir, shard.name, sidecar) as writer:
        for batch in read_sample_batches(shard, batch_size):
            arrived_marked = batch.filter(pc.invert(alive_mask(batch)))
            if stats:  # a copy without stages has no counts; its removed rows are still in the audit file
                stats[0].add_batch(rows_in=arrived_marked.num_rows, kept=0, dropped=count_reasons(arrived_marked))
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
