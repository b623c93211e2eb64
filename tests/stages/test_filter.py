"""The CLIP filter over img2dataset shards with the shipped tiny model."""

from __future__ import annotations

import io
import shutil
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from laion_hf.cli import app
from laion_hf.core.stage import split_kept
from laion_hf.io.samples import read_sample_batches
from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import iter_samples
from laion_hf.models.clip import TINY, tiny_thresholds
from laion_hf.stages.embed import DECODE_ERROR, SIMILARITY, ClipEmbed
from laion_hf.stages.filter import REASON, SimilarityFilter
from laion_hf.steps.filter import filter_shards
from laion_hf.testing.synthetic import mismatched_caption, sample
from laion_hf.testing.synthetic.shards import write_shards
from tests.models import real_images
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


@pytest.fixture(scope="module")
def embed_stage():
    stage = ClipEmbed(TINY, multilingual=True, batch_size=8, workers=2)
    stage.setup()
    return stage


def test_non_english_rows_use_the_multilingual_encoder(embed_stage):
    scenes = [sample(seed, unsafe=False, watermark=False) for seed in (40, 41, 42, 43)]
    languages = ["en", "de", "fr", "es"]
    batch = pa.table({
        "key": ["a", "b", "c", "d"],
        "caption": [s.captions[lang] for s, lang in zip(scenes, languages)],
        "language": languages,
        "image": [s.encode() for s in scenes],
        "image_ext": ["jpg"] * 4,
    })
    out = embed_stage(batch)
    clip = embed_stage.clip
    pixels = torch.stack([clip.preprocess(Image.open(io.BytesIO(b))) for b in batch["image"].to_pylist()])
    images = clip.encode_images(pixels)
    tower = (images * clip.encode_texts(batch["caption"].to_pylist())).sum(-1)
    student = (images * clip.encode_multilingual(batch["caption"].to_pylist())).sum(-1)
    similarity = torch.tensor(out[SIMILARITY].to_pylist())
    assert torch.allclose(similarity[0], tower[0], atol=1e-4)  # English: the CLIP text tower
    assert torch.allclose(similarity[1:], student[1:], atol=1e-4)  # de/fr/es: the multilingual student
    assert not torch.allclose(similarity[1:], tower[1:], atol=1e-2)


def test_non_english_matched_kept_and_mismatched_dropped(embed_stage):
    scenes = [sample(seed) for seed in range(60, 84)]
    languages = ["de", "fr", "es"] * 8
    matched = [i % 2 == 0 for i in range(24)]
    batch = pa.table({
        "key": [str(i) for i in range(24)],
        "caption": [s.captions[lang] if m else mismatched_caption(s.attributes, lang, seed=i)
                    for i, (s, lang, m) in enumerate(zip(scenes, languages, matched))],
        "language": languages,
        "image": [s.encode() for s in scenes],
        "image_ext": ["jpg"] * 24,
    })
    kept = set(split_kept(SimilarityFilter(**tiny_thresholds())(embed_stage(batch)))[0]["key"].to_pylist())
    assert not kept & {str(i) for i in range(24) if not matched[i]}, "a mismatched caption was kept"
    assert len(kept) >= 11, f"only {len(kept)} of 12 matched non-English captions kept"


def test_undecodable_images_are_counted_and_dropped_rows_skipped(embed_stage):
    good = sample(5).encode()
    batch = pa.table({
        "key": ["ok", "corrupt", "earlier"],
        "caption": [sample(5).captions["en"]] * 3,
        "image": [good, b"\xff\xd8 not a jpeg", good],
        "image_ext": ["jpg"] * 3,
        "drop_reason": [None, None, "language"],
    })
    out = embed_stage(batch)
    assert out["drop_reason"].to_pylist() == [None, DECODE_ERROR, "language"]
    assert out[SIMILARITY].null_count == 2 and out[SIMILARITY][0].as_py() is not None


def test_real_image_formats_embed_as_they_are_displayed(embed_stage):
    """JPEG, PNG with alpha, CMYK JPEG, WebP, EXIF-rotated JPEG of a large real photo: the same embedding as the
    picture they show (a full decode, as open_clip's preprocess expects); a PNG broken mid-decode is marked."""
    batch, names = real_images.format_batch(real_images.photo())
    out = embed_stage(batch)
    n = len(names)
    assert out["drop_reason"].to_pylist() == [None] * (2 * n) + [DECODE_ERROR]
    assert out[SIMILARITY].null_count == 1
    embeddings = np.array(out["image_embedding"].to_pylist()[: 2 * n], dtype=np.float32)
    for i, name in enumerate(names):
        # Identical pixels give identical embeddings; the alpha matting may round one level differently.
        atol = 2e-3 if name == "png-alpha" else 0
        np.testing.assert_allclose(embeddings[i], embeddings[n + i], atol=atol, err_msg=name)


@pytest.mark.slow
def test_cli_filters_and_prints_a_summary(tmp_path):
    source, output = tmp_path / "in", tmp_path / "out"
    write_shards(str(source), shards=1, per_shard=12, languages=("en", "de"), seed=7)
    result = CliRunner().invoke(app, ["filter", str(source), str(output), "--model", TINY, "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert "clip-filter" in result.output and "of 12 samples kept" in result.output and "sha256" in result.output
    kept = sum(b.num_rows for s in discover_shards(str(output)) if s.tar for b in read_sample_batches(s))
    assert kept == sum(1 for _ in iter_samples(str(output / "00000.tar")))


# --- thresholds that belong to the weights; a similarity the input already has --------------------------------------


def test_thresholds_belong_to_the_weights(tmp_path):
    from laion_hf.core.errors import UserError
    from laion_hf.models.clip import TINY_WEIGHTS, Weights, resolve_weights
    from laion_hf.stages.filter import choose_thresholds

    calibrated = tiny_thresholds()
    assert choose_thresholds(resolve_weights(TINY, "default"), None, None) == (
        calibrated["threshold"], calibrated["multilingual_threshold"],
        "calibrated for laion-hf-tiny on held-out synthetic data")
    openai_b32 = Weights("ViT-B-32-quickgelu", tag="openai", origin="openai", quick_gelu=True)
    assert choose_thresholds(openai_b32, None, None) == (0.28, 0.26, "LAION-5B's, for OpenAI ViT-B/32")
    assert choose_thresholds(openai_b32, 0.30, None) == (0.30, None, "given")  # LAION-400M's, when asked
    copy = tmp_path / "tiny-copy.safetensors"
    shutil.copyfile(TINY_WEIGHTS, copy)
    assert resolve_weights(TINY, str(copy)).origin == "laion-hf"  # byte-identical: still the shipped weights
    with copy.open("ab") as f:
        f.write(b" ")  # any other file is not
    for weights in (resolve_weights(TINY, str(copy)), Weights("ViT-L-14-quickgelu", tag="openai", origin="openai"),
                    Weights("ViT-B-32")):
        with pytest.raises(UserError, match="no published similarity threshold for these weights; pass --threshold"):
            choose_thresholds(weights, None, None)


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
