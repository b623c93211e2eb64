"""Clean one shard: its parquet (streamed in batches) and, in img2dataset layout, its tar.

The parquet is read with ``iter_batches`` and written with a ``ParquetWriter``
under the input's exact Arrow schema (column order, types, schema metadata)
and compression, so memory holds one batch plus one shard's sample keys. The
tar is rewritten member by member (:func:`laion_hf.io.tar.rewrite_tar`): kept
images are byte-identical, never re-encoded. Parquet, tar and ``_stats.json``
are all written under temporary names and renamed only once the whole shard
succeeded, so a failure or a kill leaves nothing that looks complete.

Image digests for the image lists come from the sidecar's ``md5``/``sha256``
columns (img2dataset computes them on the *original* downloaded bytes, which is
what partner lists refer to). Only when the sidecar lacks them are they computed
from the tar's bytes, which are the resized/re-encoded image unless resizing was
off; the shard's stats say which source was used. The LAION hashes of the rows
an image list removed are kept in OUTPUT's bookkeeping
(``.laion-hf/image-removed/<shard>.parquet``, committed with the shard), so the
LAION metadata the download came from can lose the rows that point at them.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laion_hf.core.errors import UserError
from laion_hf.core.hashing import hex_digest
from laion_hf.core.schema import require_columns, resolve_columns
from laion_hf.core.stage import StageStats, count_reasons, split_kept
from laion_hf.io.atomic import atomic_path, bookkeeping_path, join, read_json, write_json
from laion_hf.io.parquet import BackgroundWriter, iter_tables, open_parquet, parquet_writer
from laion_hf.io.samples import IMAGE_EXTENSIONS
from laion_hf.io.shards import Shard
from laion_hf.io.tar import iter_samples, rewrite_tar
from laion_hf.stages.removal import COMPUTED_IMAGE_DIGEST, RemovalStage, laion_hashes

SUCCESS = "success"
IMAGE_REMOVED_DIR = "image-removed"
IMAGE_REMOVED_SCHEMA = pa.schema([pa.field("hash", pa.int64()), pa.field("reason", pa.string())])


class ShardMismatchError(UserError, ValueError):
    """A tar and its sidecar parquet disagree about which samples exist."""


def parquet_compression(parquet: pq.ParquetFile) -> str:
    """The input's codec, so the output is written the same way (snappy for LAION's Spark shards)."""
    metadata = parquet.metadata
    if metadata.num_row_groups and metadata.num_columns:
        return metadata.row_group(0).column(0).compression.lower()
    return "snappy"


def dictionary_columns(table: pa.Table, max_distinct_ratio: float = 0.5, sample_rows: int = 8192) -> list[str]:
    """Columns worth dictionary-encoding, judged on the first rows of the shard's first batch.

    LAION's URL, caption, hash and score columns are nearly unique, where a
    dictionary only costs time (pyarrow falls back to plain after 1 MiB anyway);
    width, height, language, status repeat and keep one.
    """
    chosen = []
    table = table.slice(0, sample_rows)
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_nested(column.type) or pa.types.is_null(column.type) or table.num_rows == 0:
            continue
        if pc.count_distinct(column).as_py() <= max_distinct_ratio * table.num_rows:
            chosen.append(name)
    return chosen


def tar_image_digests(tar: str, algorithms: list[str]) -> dict[str, dict[str, str]]:
    """``{algorithm: {key: hex}}`` over the image member of every sample in ``tar``."""
    digests: dict[str, dict[str, str]] = {alg: {} for alg in algorithms}
    for key, members in iter_samples(tar):
        ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
        if ext is not None:
            for alg in algorithms:
                digests[alg][key] = hex_digest(alg, members[ext])
    return digests


def image_hash_sources(stage: RemovalStage, names: list[str], has_tar: bool) -> dict[str, str]:
    """Where each image digest the lists need comes from, in words for the report."""
    cols = resolve_columns(names, ["md5", "sha256"])
    sources = {}
    for alg in stage.image_algorithms:
        if cols[alg] is not None:
            sources[alg] = f"sidecar column {cols[alg]} (original downloaded bytes)"
        elif has_tar:
            sources[alg] = "computed from tar image bytes (re-encoded unless resizing was off)"
        else:
            sources[alg] = "unavailable: no digest column and no tar; image lists not applied"
    return sources


def _updated_stats(path: str, result: dict[str, Any], tar_kept: int, kept_status: list[pa.Table]) -> dict:
    """img2dataset's ``_stats.json`` with the counts of the kept samples and what cleaning removed."""
    stats = read_json(path)
    stats["count"] = result["kept"]
    stats["successes"] = tar_kept
    if kept_status:
        table = pa.concat_tables(kept_status)
        statuses = table.column(0).to_pylist()
        for status in ("failed_to_download", "failed_to_resize"):
            if status in stats:
                stats[status] = statuses.count(status)
        if "status_dict" in stats and table.num_columns == 2:
            messages = [SUCCESS if s == SUCCESS else m for s, m in zip(statuses, table.column(1).to_pylist())]
            stats["status_dict"] = dict(Counter(messages))
    stats["laion_hf_clean"] = {"rows_in": result["rows_in"], "removed": result["dropped"]}
    return stats


@dataclass
class SampleIndex:
    """Which sample keys the sidecar lists, which must be in the tar (status success), which are kept."""

    listed: set[str] = field(default_factory=set)
    expected: set[str] = field(default_factory=set)
    kept: set[str] = field(default_factory=set)

    def add(self, keys: list, alive: list[bool], statuses: list[str | None]) -> None:
        for key, is_kept, status in zip(keys, alive, statuses):
            key = str(key)
            self.listed.add(key)
            if status == SUCCESS:
                self.expected.add(key)
            if is_kept:
                self.kept.add(key)


def rewrite_shard_tar(shard: Shard, out_tar: str, index: SampleIndex) -> dict[str, int]:
    """Rewrite the shard's tar keeping ``index.kept``; the tar and sidecar must describe the same samples."""
    seen: set[str] = set()

    def keep(key: str) -> bool:
        if key not in index.listed:
            raise ShardMismatchError(f"{shard.tar}: sample {key} has no row in {shard.parquet}")
        seen.add(key)
        return key in index.kept

    rewritten = rewrite_tar(shard.tar, out_tar, keep)
    missing = sorted(index.expected - seen)
    if missing:
        more = f" ({len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ShardMismatchError(f"{shard.parquet}: key {missing[0]} (status success) has no member in {shard.tar}{more}")
    kept_rows = len(index.kept & index.expected)
    if len(rewritten.kept) != kept_rows:
        raise AssertionError(f"{shard.tar}: tar kept {len(rewritten.kept)} samples, parquet {kept_rows} successful rows")
    return {"kept": len(rewritten.kept), "removed": len(rewritten.removed)}


def image_removals_path(output_dir: str, shard_name: str) -> str:
    """Where a cleaned shard records the LAION hashes of the rows its image lists removed."""
    return bookkeeping_path(output_dir, IMAGE_REMOVED_DIR, f"{shard_name}.parquet")


def image_removals(removed: pa.Table, reasons: list[str]) -> pa.Table:
    """``(hash, reason)`` of the removed rows whose reason is one of ``reasons``."""
    hit = pc.is_in(removed["drop_reason"], value_set=pa.array(reasons, pa.string()))
    rows = removed.filter(hit)
    return pa.table([pc.cast(laion_hashes(rows), pa.int64()), rows["drop_reason"]], schema=IMAGE_REMOVED_SCHEMA)


def check_shard_columns(shard: Shard, names: list[str], stage: RemovalStage) -> None:
    """Refuse a shard lacking what cleaning needs: url, the stage's columns, and ``key`` beside a tar."""
    require_columns(names, ["url", *(["key"] if shard.tar is not None else [])], shard.parquet)
    stage.check_columns(names, shard.parquet)


def clean_shard(shard: Shard, *, output_dir: str, stage: RemovalStage, batch_size: int = 65536) -> dict[str, Any]:
    """Write the cleaned ``shard`` into ``output_dir`` under the same file names; return its stats."""
    started = time.perf_counter()
    parquet = open_parquet(shard.parquet)
    schema = parquet.schema_arrow
    names = schema.names
    check_shard_columns(shard, names, stage)
    cols = resolve_columns(names, ["key", "status", "error_message"])
    status_columns = [c for c in (cols["status"], cols["error_message"]) if c] if cols["status"] else []
    sources = image_hash_sources(stage, names, shard.tar is not None)
    computed_algs = [alg for alg, src in sources.items() if src.startswith("computed")]
    computed = tar_image_digests(shard.tar, computed_algs) if computed_algs else {}

    stats = StageStats(shard.name)
    index = SampleIndex()
    kept_status: list[pa.Table] = []
    removed_images: list[pa.Table] = []
    parquet_name = shard.parquet.rsplit("/", 1)[-1]
    with ExitStack() as stack:
        out_parquet = stack.enter_context(atomic_path(join(output_dir, parquet_name)))
        if shard.tar is not None:
            out_tar = stack.enter_context(atomic_path(join(output_dir, f"{shard.name}.tar")))
        writer: BackgroundWriter | None = None
        for table in iter_tables(parquet, shard.parquet, batch_size):
            if writer is None:
                encoding = {"compression": parquet_compression(parquet), "use_dictionary": dictionary_columns(table)}
                writer = stack.enter_context(BackgroundWriter(out_parquet, schema, **encoding))
            keys = table[cols["key"]].to_pylist() if cols["key"] and shard.tar is not None else None
            for alg in computed_algs:
                digests = computed[alg]
                table = table.append_column(
                    COMPUTED_IMAGE_DIGEST[alg], pa.array([digests.get(str(k)) for k in keys], pa.string())
                )
            marked = stage(table)
            kept, removed = split_kept(marked)
            kept = kept.select(names)
            if kept.num_rows:  # an empty row group makes the file unreadable for `datasets` (batch size 0)
                writer.write_table(kept)
            stats.add_batch(table.num_rows, kept.num_rows, count_reasons(removed))
            if stage.image_reasons and removed.num_rows:
                removed_images.append(image_removals(removed, stage.image_reasons))
            if keys is not None:
                statuses = table[cols["status"]].to_pylist() if cols["status"] else [SUCCESS] * len(keys)
                index.add(keys, pc.is_null(marked["drop_reason"]).to_pylist(), statuses)
            if status_columns and shard.stats is not None:
                kept_status.append(kept.select(status_columns))

        if writer is None:  # an empty shard: an empty file with the schema
            stack.enter_context(parquet_writer(out_parquet, schema, compression=parquet_compression(parquet)))

        tar_counts = rewrite_shard_tar(shard, out_tar, index) if shard.tar is not None else None
        if stage.image_reasons:
            removals = pa.concat_tables([IMAGE_REMOVED_SCHEMA.empty_table(), *removed_images])
            with parquet_writer(stack.enter_context(atomic_path(image_removals_path(output_dir, shard.name))),
                                IMAGE_REMOVED_SCHEMA) as recorded:
                if removals.num_rows:
                    recorded.write_table(removals)

        stats.seconds = time.perf_counter() - started
        stats.check()
        result = {**stats.to_dict(), "image_hash_source": sources, "tar": tar_counts}
        if shard.stats is not None:
            tar_kept = tar_counts["kept"] if tar_counts else stats.kept
            updated = _updated_stats(shard.stats, result, tar_kept, kept_status)
            write_json(stack.enter_context(atomic_path(join(output_dir, f"{shard.name}_stats.json"))), updated)
    return result
