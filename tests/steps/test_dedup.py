"""The dedup step: exact (LAION hash) and near (pHash, CLIP embedding) duplicates across all shards, keepers
recorded, resumable, on the local runner (Ray: tests/runners/test_ray.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import iter_samples
from laion_hf.stages.duplicates import DUPLICATE_HASH, DUPLICATE_OF, NEAR_DUPLICATE_EMBEDDING, NEAR_DUPLICATE_PHASH
from laion_hf.steps.dedup import dedup_shards
from tests.dedup_inputs import ALL_KEYS, EXPECTED_REMOVED, SHARDS, write_embeddings, write_input


def removed_by_key(output: Path) -> dict[str, tuple[str, str]]:
    removed = {}
    for name in SHARDS:
        path = output / f"{name}_removed.parquet"
        if path.exists():
            for row in pq.read_table(path).to_pylist():
                removed[row["key"]] = (row[DUPLICATE_OF], row["drop_reason"])
    return removed


@pytest.mark.parametrize("workers", [1, 2])
def test_dedup_removes_exactly_the_duplicates_across_shards(tmp_path, workers):
    source = write_input(tmp_path / "in")
    report = dedup_shards(str(source), str(tmp_path / "out"), workers=workers, show_progress=False)

    assert removed_by_key(tmp_path / "out") == EXPECTED_REMOVED
    kept_keys = set()
    originals = {key: image for rows in SHARDS.values() for key, _, _, image in rows}
    for shard in discover_shards(str(tmp_path / "out")):
        for key, members in iter_samples(shard.tar):
            assert members["png"] == originals[key]  # byte-identical copies
            kept_keys.add(key)
        assert set(pq.read_table(shard.parquet)["key"].to_pylist()) <= kept_keys
    assert kept_keys == ALL_KEYS - set(EXPECTED_REMOVED)
    assert report.stats.rows_in == len(ALL_KEYS) == report.stats.kept + report.stats.removed
    assert dict(report.stats.dropped) == {DUPLICATE_HASH: 2, NEAR_DUPLICATE_PHASH: 3}


def test_exact_only_keeps_near_duplicates(tmp_path):
    source = write_input(tmp_path / "in")
    report = dedup_shards(str(source), str(tmp_path / "out"), max_distance=None, show_progress=False)
    assert removed_by_key(tmp_path / "out") == {
        "000010000": ("000000000", DUPLICATE_HASH),
        "000010003": ("000000002", DUPLICATE_HASH),
    }
    assert report.stats.kept == len(ALL_KEYS) - 2


def test_rerun_resumes_from_done_markers(tmp_path):
    source = write_input(tmp_path / "in")
    first = dedup_shards(str(source), str(tmp_path / "out"), show_progress=False)
    (source / "00001.tar").write_bytes(b"damaged")  # a re-run that re-read this shard would fail
    second = dedup_shards(str(source), str(tmp_path / "out"), show_progress=False)
    assert second.to_dict() == first.to_dict()


def test_cli_dedup(tmp_path):
    from typer.testing import CliRunner

    from laion_hf.cli import app

    source = write_input(tmp_path / "in")
    result = CliRunner().invoke(app, ["dedup", str(source), str(tmp_path / "out"), "--exact-only"])
    assert result.exit_code == 0, result.output
    assert "duplicate-hash=2" in result.output
    assert removed_by_key(tmp_path / "out").keys() == {"000010000", "000010003"}


def test_resume_with_other_options_is_refused(tmp_path):
    from laion_hf.stages.duplicates import DedupError

    source = write_input(tmp_path / "in")
    dedup_shards(str(source), str(tmp_path / "out"), show_progress=False)
    with pytest.raises(DedupError, match="max_distance"):
        dedup_shards(str(source), str(tmp_path / "out"), max_distance=None, show_progress=False)


@pytest.mark.parametrize("rows_per_unit", [None, 2])
def test_embedding_near_duplicates_are_removed_with_their_keeper(tmp_path, rows_per_unit):
    """Also with the decision cut into units of 2 rows: SimHashes joined to rows across key partitions."""
    source = write_input(tmp_path / "in")
    embeddings = write_embeddings(tmp_path / "emb", {"000010001": "000000001"})  # D looks like B to CLIP
    report = dedup_shards(str(source), str(tmp_path / "out"), embeddings=str(embeddings), show_progress=False,
                          rows_per_unit=rows_per_unit)
    assert removed_by_key(tmp_path / "out") == {**EXPECTED_REMOVED, "000010001": ("000000001", NEAR_DUPLICATE_EMBEDDING)}
    assert report.stats.dropped[NEAR_DUPLICATE_EMBEDDING] == 1


