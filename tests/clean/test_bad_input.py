"""Bad input: a clear error naming the file (and line/key), and nothing half-written in OUTPUT."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from laion_hf.clean import CleanOptions, clean_copy
from laion_hf.clean.shard import ShardMismatchError
from laion_hf.core.errors import UserError
from laion_hf.core.schema import SchemaError
from laion_hf.io.parquet import CorruptParquetError
from laion_hf.io.removal_lists import RemovalListError
from laion_hf.io.tar import CorruptTarError
from laion_hf.stages.removal import MissingPunsafeError


def written(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def shard_outputs(out: Path, name: str) -> list[str]:
    """Files of shard ``name`` in OUTPUT (temporaries included)."""
    return [f for f in written(out) if f.startswith(name)]


def test_malformed_removal_list_refuses_to_start(sample_copy, tmp_path):
    bad = tmp_path / "urls.txt"
    bad.write_text("a" * 64 + "\n\nnot a digest\n")
    out = tmp_path / "out"
    with pytest.raises(RemovalListError, match=rf"{bad}: line 3: 'not a digest' is not a valid url-sha256"):
        clean_copy(str(sample_copy.metadata_dir), str(out), CleanOptions(remove=(("url-sha256", str(bad)),)), show_progress=False)
    assert written(out) == []


def test_missing_required_column_names_the_shard_before_anything_is_written(sample_copy, tmp_path):
    shards = sorted(sample_copy.metadata_dir.glob("*.parquet"))
    pq.write_table(pq.read_table(shards[-1]).drop_columns(["URL"]), shards[-1])
    out = tmp_path / "out"
    with pytest.raises(SchemaError, match=rf"{shards[-1].name}: missing required column\(s\) url"):
        clean_copy(str(sample_copy.metadata_dir), str(out), CleanOptions(variant="research"), show_progress=False)
    assert written(out) == []


def test_variant_on_a_download_without_punsafe_is_a_clear_error(sample_copy, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(MissingPunsafeError, match=r"00000\.parquet: the variant needs a punsafe column"):
        clean_copy(str(sample_copy.download_dir), str(out), CleanOptions(variant="research-safe"), show_progress=False)
    assert written(out) == []


def test_metadata_without_punsafe_is_a_clear_error(sample_copy, tmp_path):
    for shard in sample_copy.metadata_dir.glob("*.parquet"):
        pq.write_table(pq.read_table(shard).drop_columns(["punsafe"]), shard)
    with pytest.raises(MissingPunsafeError, match="--metadata needs a punsafe column"):
        clean_copy(str(sample_copy.download_dir), str(tmp_path / "out"),
                   CleanOptions(variant="research", metadata=str(sample_copy.metadata_dir)), show_progress=False)


def test_corrupt_parquet_shard_names_the_file(sample_copy, tmp_path):
    shard = sorted(sample_copy.metadata_dir.glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    out = tmp_path / "out"
    with pytest.raises(CorruptParquetError, match=rf"{shard.name}: unreadable parquet"):
        clean_copy(str(sample_copy.metadata_dir), str(out), CleanOptions(variant="research"), show_progress=False)
    assert written(out) == []


def test_truncated_tar_names_the_file_and_leaves_no_shard_output(sample_copy, tmp_path):
    tar = sample_copy.download_dir / "00001.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    out = tmp_path / "out"
    with pytest.raises(CorruptTarError, match=r"00001\.tar"):
        clean_copy(str(sample_copy.download_dir), str(out), CleanOptions(), show_progress=False)
    assert shard_outputs(out, "00001") == []
    assert (out / ".laion-hf" / "done" / "00000.json").exists()  # healthy shards are complete, the damaged one absent


def test_metadata_row_whose_tar_member_is_missing_names_parquet_and_key(sample_copy, tmp_path):
    tar = sample_copy.download_dir / "00002.tar"
    with tarfile.open(tar) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    dropped_key = members[0][0].name.split(".")[0]
    with tarfile.open(tar, "w") as dst:
        for info, data in members:
            if not info.name.startswith(dropped_key):
                dst.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    with pytest.raises(ShardMismatchError, match=rf"00002\.parquet: key {dropped_key} \(status success\) has no member in .*00002\.tar"):
        clean_copy(str(sample_copy.download_dir), str(out), CleanOptions(), show_progress=False)
    assert shard_outputs(out, "00002") == []


def test_tar_sample_without_a_sidecar_row_names_tar_and_key(sample_copy, tmp_path):
    sidecar = sample_copy.download_dir / "00000.parquet"
    table = pq.read_table(sidecar)
    rows = table.to_pylist()
    orphan = next(r["key"] for r in rows if r["status"] == "success")
    pq.write_table(table.from_pylist([r for r in rows if r["key"] != orphan], schema=table.schema), sidecar)
    out = tmp_path / "out"
    with pytest.raises(ShardMismatchError, match=rf"00000\.tar: sample {orphan} has no row in"):
        clean_copy(str(sample_copy.download_dir), str(out), CleanOptions(), show_progress=False)
    assert shard_outputs(out, "00000") == []


def test_missing_input_directory(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        clean_copy(str(tmp_path / "nope"), str(tmp_path / "out"), CleanOptions(), show_progress=False)


def test_output_equal_to_input_is_refused(sample_copy):
    with pytest.raises(UserError, match="OUTPUT must differ from INPUT"):
        clean_copy(str(sample_copy.metadata_dir), str(sample_copy.metadata_dir) + "/", CleanOptions(), show_progress=False)
