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


@pytest.mark.parametrize("family", ["laion400m", "laion5b-base", "laion5b-multi", "laion5b-joined", "laion5b-aesthetic", "relaion5b"])
def test_laion_releases_as_published(family, laion_pairs, tmp_path):
    """Spark parts of real pairs with their hidden .crc files and _SUCCESS: the parts, in order, nothing else."""
    from laion_hf.demo.sample_copy import release_table, write_spark_output

    parts = write_spark_output(tmp_path, release_table(laion_pairs.slice(0, 50), family), shards=3)
    (tmp_path / "_metadata.parquet").write_bytes(b"")  # a Parquet summary file some writers leave
    (tmp_path / ".part-00003-x-c000.snappy.parquet").write_bytes(b"")  # an upload in progress
    shards = discover_shards(str(tmp_path))
    assert [s.parquet for s in shards] == [str(p) for p in parts]
    assert [s.name for s in shards] == [p.name.removesuffix(".snappy.parquet") for p in parts]
    assert all(s.tar is None and s.stats is None for s in shards)
