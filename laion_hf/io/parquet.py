"""Parquet on local paths and fsspec URLs alike, with errors that name the file.

pyarrow opens local paths itself (fastest); any other fsspec URL is handed to
it together with its fsspec filesystem, so INPUT and OUTPUT may be remote.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Self

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from laion_hf.core.errors import UserError
from laion_hf.core.schema import require_text_columns
from laion_hf.io.atomic import filesystem


class CorruptParquetError(UserError, ValueError):
    """A parquet file cannot be read."""


def arrow_location(path: str) -> tuple[str, fsspec.AbstractFileSystem | None]:
    """``(path, filesystem)`` for pyarrow: local paths as they are, other URLs with their fsspec filesystem."""
    fs, inner = filesystem(path)
    return (inner, None) if isinstance(fs, LocalFileSystem) else (inner, fs)


def open_parquet(path: str) -> pq.ParquetFile:
    """Open a parquet file; a damaged one, or one whose text columns are not text, raises naming ``path``."""
    where, fs = arrow_location(path)
    try:
        parquet = pq.ParquetFile(where, filesystem=fs)
    except (pa.ArrowException, OSError) as exc:
        raise CorruptParquetError(f"{path}: unreadable parquet ({exc})") from exc
    require_text_columns(parquet.schema_arrow, path)
    return parquet


def parquet_writer(path: str, schema: pa.Schema, **options: Any) -> pq.ParquetWriter:
    where, fs = arrow_location(path)
    return pq.ParquetWriter(where, schema, filesystem=fs, **options)


class BackgroundWriter:
    """A parquet writer whose tables are written on a thread of its own, in order, at most ``depth`` waiting.

    pyarrow releases the GIL while it encodes and compresses, so the caller
    reads and marks the next batch while this one is written: two cores busy
    for one file in one process, memory bounded by ``depth`` tables. A write
    that failed raises in the caller, at its next :meth:`write_table` or when
    the ``with`` block ends; the file is closed either way.
    """

    def __init__(self, path: str, schema: pa.Schema, depth: int = 2, **options: Any) -> None:
        self._writer = parquet_writer(path, schema, **options)
        self._depth = depth
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._pending: deque[Future] = deque()

    def write_table(self, table: pa.Table) -> None:
        self._pending.append(self._thread.submit(self._writer.write_table, table))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            while exc_type is None and self._pending:
                self._pending.popleft().result()
        finally:
            self._thread.shutdown(wait=True, cancel_futures=True)
            self._writer.close()


def iter_tables(
    parquet: pq.ParquetFile, path: str, batch_size: int, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """The file's rows as tables of at most ``batch_size`` rows; a damaged file raises naming ``path``."""
    try:
        for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
            yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError) as exc:
        raise CorruptParquetError(f"{path}: unreadable parquet ({exc})") from exc
