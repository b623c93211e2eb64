"""BackgroundWriter: the same file as a plain ParquetWriter, and a failed write is never silent."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_hf.io.parquet import BackgroundWriter

SCHEMA = pa.schema([pa.field("url", pa.string()), pa.field("hash", pa.int64())])


def batches(count: int, rows: int = 1000) -> list[pa.Table]:
    return [
        pa.table({"url": [f"https://example.com/{b}/{i}.jpg" for i in range(rows)],
                  "hash": list(range(b * rows, (b + 1) * rows))}, schema=SCHEMA)
        for b in range(count)
    ]


def test_tables_are_written_in_order_as_row_groups_like_a_plain_writer(tmp_path):
    tables = batches(7)
    with BackgroundWriter(str(tmp_path / "background.parquet"), SCHEMA, depth=2, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table)
    with pq.ParquetWriter(tmp_path / "plain.parquet", SCHEMA, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table)

    written = pq.ParquetFile(tmp_path / "background.parquet")
    assert written.read().equals(pa.concat_tables(tables))
    assert written.metadata.num_row_groups == 7
    assert written.metadata.row_group(0).column(0).compression == "ZSTD"
    assert (tmp_path / "background.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()


def test_a_failed_write_raises_in_the_caller_at_a_later_write(tmp_path):
    wrong = pa.table({"other": [1, 2]})
    with pytest.raises(ValueError, match="schema"), BackgroundWriter(str(tmp_path / "x.parquet"), SCHEMA, depth=1) as writer:
        writer.write_table(wrong)
        for table in batches(3):
            writer.write_table(table)
        pytest.fail("the failed write went unnoticed")


def test_a_failed_last_write_raises_when_the_block_ends(tmp_path):
    with pytest.raises(ValueError, match="schema"), BackgroundWriter(str(tmp_path / "x.parquet"), SCHEMA) as writer:
        writer.write_table(pa.table({"other": [1, 2]}))
