"""Shard discovery in LAION metadata folders and img2dataset downloads."""

from __future__ import annotations

import pytest

from laion_hf.io.shards import discover_shards


def test_img2dataset_layout(tmp_path):
    for name in ("00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar.1a2b3c4d.tmp"):
        (tmp_path / name).write_bytes(b"")
    shards = discover_shards(str(tmp_path))
    assert [(s.name, s.tar is not None, s.stats is not None) for s in shards] == [("00000", True, True), ("00001", False, False)]


def test_spark_metadata_layout(tmp_path):
    (tmp_path / "part-00000-abc-c000.snappy.parquet").write_bytes(b"")
    (tmp_path / "_SUCCESS").write_bytes(b"")
    [shard] = discover_shards(str(tmp_path))
    assert shard.name == "part-00000-abc-c000" and shard.tar is None


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no parquet shards"):
        discover_shards(str(tmp_path))
