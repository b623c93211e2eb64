"""The filter step: ``filter_shards`` and ``laion-hf filter`` over img2dataset shards with the shipped tiny model."""

from __future__ import annotations

import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from laion_hf.cli import app
from laion_hf.io.samples import read_sample_batches
from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import iter_samples
from laion_hf.models.clip import TINY, tiny_thresholds
from laion_hf.stages.embed import SIMILARITY
from laion_hf.stages.filter import REASON
from laion_hf.steps.filter import filter_shards
from laion_hf.testing.synthetic.shards import write_shards
from tests.models.cli_entry import run_cli


@pytest.fixture(scope="module")
def english_run(tmp_path_factory):
    source = tmp_path_factory.mktemp("shards")
    truth = write_shards(str(source), shards=2, per_shard=24, languages=("en",), seed=1)
    output = tmp_path_factory.mktemp("filtered")
    report = filter_shards(str(source), str(output), model=TINY, batch_size=16, workers=2, show_progress=False)
    return source, output, truth, report


def _tar_members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


@pytest.mark.slow
def test_mismatched_captions_are_filtered_out_and_matched_kept(english_run):
    _, output, truth, report = english_run
    kept = set(pq.read_table(output / "00000.parquet")["key"].to_pylist())
    kept |= set(pq.read_table(output / "00001.parquet")["key"].to_pylist())
    matched = {t.key for t in truth if t.matched}
    mismatched = {t.key for t in truth if not t.matched}
    assert len(matched) > 10 and len(mismatched) > 10
    assert not kept & mismatched, "a mismatched caption was kept"
    assert len(kept & matched) >= 0.9 * len(matched), f"only {len(kept & matched)} of {len(matched)} matched kept"
    embed, clip_filter = report.stages
    assert embed.rows_in == 48 and embed.removed == 0
    assert clip_filter.rows_in == 48 and clip_filter.kept == len(kept)
    assert clip_filter.dropped == {REASON: 48 - len(kept)}
    assert report.threshold == tiny_thresholds()["threshold"]


@pytest.mark.slow
def test_keys_captions_and_original_bytes_are_preserved(english_run):
    source, output, _, _ = english_run
    before = _tar_members(source / "00000.tar")
    after = _tar_members(output / "00000.tar")
    kept = pq.read_table(output / "00000.parquet")
    assert kept.num_rows and set(kept.column_names) >= {"key", "caption", "url", SIMILARITY}
    for row in kept.to_pylist():
        key = row["key"]
        assert after[f"{key}.jpg"] == before[f"{key}.jpg"]
        assert after[f"{key}.txt"] == before[f"{key}.txt"] == row["caption"].encode()
        assert row[SIMILARITY] >= tiny_thresholds()["threshold"]
    removed = pq.read_table(output / "00000_removed.parquet")
    assert set(removed["drop_reason"].to_pylist()) == {REASON}
    assert removed.num_rows + kept.num_rows == 24
    assert "image" not in removed.column_names and "image_embedding" not in kept.column_names


@pytest.mark.slow
def test_embeddings_are_saved_like_clip_retrieval(english_run):
    _, output, _, _ = english_run
    kept = pq.read_table(output / "00001.parquet")
    image_emb = np.load(output / "img_emb" / "img_emb_00001.npy")
    text_emb = np.load(output / "text_emb" / "text_emb_00001.npy")
    metadata = pq.read_table(output / "metadata" / "metadata_00001.parquet")
    assert image_emb.dtype == np.float16 and image_emb.shape == text_emb.shape == (kept.num_rows, 64)
    assert metadata["key"].to_pylist() == kept["key"].to_pylist()
    cosine = (image_emb.astype(np.float32) * text_emb.astype(np.float32)).sum(-1)
    np.testing.assert_allclose(cosine, kept[SIMILARITY].to_numpy(), atol=2e-2)


@pytest.mark.slow
def test_rerun_resumes_from_done_markers(english_run):
    source, output, _, report = english_run
    stamp = (output / "00000.tar").stat().st_mtime_ns
    again = filter_shards(str(source), str(output), model=TINY, batch_size=16, show_progress=False)
    assert (output / "00000.tar").stat().st_mtime_ns == stamp
    assert [s.to_dict() | {"seconds": 0} for s in again.stages] == [
        s.to_dict() | {"seconds": 0} for s in report.stages
    ]


@pytest.mark.slow
def test_cli_filters_and_prints_a_summary(tmp_path):
    source, output = tmp_path / "in", tmp_path / "out"
    write_shards(str(source), shards=1, per_shard=12, languages=("en", "de"), seed=7)
    result = CliRunner().invoke(app, ["filter", str(source), str(output), "--model", TINY, "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert "clip-filter" in result.output and "of 12 samples kept" in result.output and "sha256" in result.output
    kept = sum(b.num_rows for s in discover_shards(str(output)) if s.tar for b in read_sample_batches(s))
    assert kept == sum(1 for _ in iter_samples(str(output / "00000.tar")))


# --- a similarity the input already has ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_laion_similarity(tmp_path_factory):
    """Synthetic-domain shards whose sidecar already carries a ``similarity`` (as LAION's metadata does)."""
    source = tmp_path_factory.mktemp("with-similarity")
    write_shards(str(source), shards=1, per_shard=12, languages=("en",), seed=11)
    table = pq.read_table(source / "00000.parquet")
    laion = np.round(np.random.default_rng(0).uniform(0.28, 0.4, table.num_rows), 4)
    pq.write_table(table.append_column("similarity", pa.array(laion, pa.float64())), source / "00000.parquet")
    return source, dict(zip(table["key"].to_pylist(), laion.tolist()))


@pytest.mark.slow
def test_a_similarity_the_input_has_is_never_replaced_silently(with_laion_similarity, tmp_path, monkeypatch, capsys):
    source, laion = with_laion_similarity
    code, out, err = run_cli(monkeypatch, capsys, "filter", source, tmp_path / "refused", "--model", TINY)
    assert code == 2
    assert f"{source}/00000.parquet: already has a 'similarity' column" in err
    assert "--overwrite" in err and "--similarity-column NAME" in err and not (tmp_path / "refused").exists()

    code, out, err = run_cli(monkeypatch, capsys, "filter", source, tmp_path / "own", "--model", TINY,
                          "--similarity-column", "similarity_tiny")
    assert code == 0, err
    assert "similarity_tiny >= 0.7154" in out
    kept = pq.read_table(tmp_path / "own" / "00000.parquet").to_pylist()
    assert kept and all(row["similarity"] == laion[row["key"]] for row in kept)  # LAION's values, untouched
    assert all(row["similarity_tiny"] >= tiny_thresholds()["threshold"] for row in kept)

    code, out, err = run_cli(monkeypatch, capsys, "filter", source, tmp_path / "over", "--model", TINY, "--overwrite")
    assert code == 0, err
    replaced = pq.read_table(tmp_path / "over" / "00000.parquet").to_pylist()
    assert [row["key"] for row in replaced] == [row["key"] for row in kept]
    assert [row["similarity"] for row in replaced] == pytest.approx([row["similarity_tiny"] for row in kept])
