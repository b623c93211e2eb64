"""Candidates in: parquet files of (url, caption, ...) cut into shard-sized download inputs.

Every file is checked before anything is written (readable footer, a text
``url`` and ``caption`` column, the same columns as the first file), so a bad
input stops the run with a message naming the file instead of an Arrow
traceback halfway through. The inputs fix each row's shard and place, which is
what makes its key stable across resumed and repeated runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from laion_hf.core.hashing import laion_hash_array
from laion_hf.core.schema import require_columns
from laion_hf.download.options import DownloadError
from laion_hf.download.shard import COMPUTED_COLUMNS
from laion_hf.io.atomic import atomic_path, filesystem, join

BATCH_ROWS = 4096
_READ_ERRORS = (pa.ArrowException, OSError, ValueError)  # what pyarrow raises on damaged parquet


def candidate_files(candidates: str | Sequence[str]) -> list[str]:
    """The parquet files named by ``candidates`` (files, or directories of ``*.parquet``)."""
    paths = [candidates] if isinstance(candidates, str) else list(candidates)
    files: list[str] = []
    for path in paths:
        fs, inner = filesystem(path)
        if fs.isdir(inner):
            found = sorted(p for p in fs.ls(inner, detail=False) if p.endswith(".parquet"))
            files.extend(fs.unstrip_protocol(p) if "://" in path else p for p in found)
        elif fs.exists(inner):
            files.append(path)
        else:
            raise DownloadError(f"{path}: no such candidate file or directory")
    if not files:
        raise DownloadError(f"{', '.join(paths)}: no candidate parquet files")
    return files


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


class CandidateFile:
    """One candidate parquet file: its url/caption columns and the columns carried into the shards."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with fsspec.open(path, "rb") as handle:
                schema = pq.ParquetFile(handle).schema_arrow
        except _READ_ERRORS as exc:
            raise DownloadError(f"{path}: not a readable parquet file ({exc})") from None
        columns = require_columns(schema.names, ["url", "caption"], path)
        for field in ("url", "caption"):
            kind = schema.field(columns[field]).type
            if not _is_text(kind):
                raise DownloadError(f"{path}: column {columns[field]} holds {kind}, not text; {field}s must be strings")
        self.url, self.caption = columns["url"], columns["caption"]
        self.carried = [n for n in schema.names if n not in (self.url, self.caption) and n.lower() not in COMPUTED_COLUMNS]
        self.adds_hash = not any(n.lower() == "hash" for n in self.carried)

    @property
    def output_names(self) -> list[str]:
        """Columns of the prepared rows: carried ones, the LAION hash if absent, caption, url."""
        return [*self.carried, *(["hash"] if self.adds_hash else []), "caption", "url"]

    def batches(self) -> Iterator[pa.Table]:
        """The file's rows as prepared tables (``output_names``), in order."""
        try:
            with fsspec.open(self.path, "rb") as handle:
                for record_batch in pq.ParquetFile(handle).iter_batches(batch_size=BATCH_ROWS):
                    yield self._prepare(pa.Table.from_batches([record_batch]))
        except _READ_ERRORS as exc:
            raise DownloadError(f"{self.path}: unreadable candidate rows ({exc})") from None

    def _prepare(self, batch: pa.Table) -> pa.Table:
        urls = batch[self.url].cast(pa.string())
        captions = batch[self.caption].cast(pa.string())
        columns = {name: batch[name] for name in self.carried}
        if self.adds_hash:
            columns["hash"] = laion_hash_array(urls, captions)
        return pa.table({**columns, "caption": captions, "url": urls})


def open_candidates(candidates: str | Sequence[str]) -> list[CandidateFile]:
    """Check every candidate file up front; all must have the first one's columns."""
    files = [CandidateFile(path) for path in candidate_files(candidates)]
    first = files[0]
    for other in files[1:]:
        if other.output_names != first.output_names:
            raise DownloadError(
                f"{other.path}: columns {', '.join(other.output_names)} differ from {first.path}'s "
                f"({', '.join(first.output_names)}); download candidate files with the same columns together"
            )
    return files


def write_inputs(files: Sequence[CandidateFile], input_dir: str, rows_per_shard: int) -> int:
    """Cut the candidates' rows into shard inputs ``00000.parquet``...; returns the shard count."""
    pending: list[pa.Table] = []
    pending_rows = 0
    shard = 0
    schema: pa.Schema | None = None

    def flush(table: pa.Table) -> None:
        nonlocal shard
        with atomic_path(join(input_dir, f"{shard:05d}.parquet")) as tmp:
            pq.write_table(table, tmp)
        shard += 1

    for file in files:
        for batch in file.batches():
            schema = schema or batch.schema
            try:
                pending.append(batch.cast(schema))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DownloadError(f"{file.path}: column types differ from {files[0].path}'s ({exc})") from None
            pending_rows += batch.num_rows
            while pending_rows >= rows_per_shard:
                table = pa.concat_tables(pending)
                flush(table.slice(0, rows_per_shard))
                rest = table.slice(rows_per_shard)
                pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
    if pending_rows:
        flush(pa.concat_tables(pending))
    return shard
