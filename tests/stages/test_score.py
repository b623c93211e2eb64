"""Score stage: the shipped tiny heads score the synthetic domain's overlays, columns and counts behave."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

from laion_hf.core.errors import UserError
from laion_hf.core.stage import DROP_REASON, mark_dropped
from laion_hf.models.clip import TINY
from laion_hf.stages.score import EMBEDDING_COLUMN, UNDECODABLE, ScoreStage, ThresholdStage
from laion_hf.testing.synthetic import sample
from tests.models import real_images
from tests.score_scenes import HELD_OUT, KINDS, TINY_MODELS, scenes


def _batch(rows) -> pa.Table:
    return pa.table(
        {
            "key": [key for key, *_ in rows],
            "caption": [kind for _, kind, *_ in rows],
            "image": pa.array([data for _, _, data, _ in rows], pa.binary()),
            "image_ext": ["jpg"] * len(rows),
        }
    )


@pytest.fixture(scope="module")
def scored():
    rows = scenes()
    stage = ScoreStage(**TINY_MODELS)
    return rows, stage, stage(_batch(rows))


def _by_kind(rows, table, column):
    values = np.array(table[column].to_pylist(), dtype=np.float32)
    kinds = np.array([kind for _, kind, *_ in rows])
    return {kind: values[kinds == kind] for kind in KINDS}


def test_unsafe_motif_scores_high_clean_low(scored):
    rows, _, table = scored
    punsafe = _by_kind(rows, table, "punsafe")
    assert table.schema.field("punsafe").type == pa.float32()
    assert np.median(punsafe["unsafe"]) > 0.5 > np.median(punsafe["clean"])
    assert (punsafe["unsafe"] > 0.5).mean() >= 0.75 and (punsafe["clean"] < 0.5).mean() >= 0.75


def test_watermarked_images_score_high_clean_low(scored):
    rows, _, table = scored
    pwatermark = _by_kind(rows, table, "pwatermark")
    assert table.schema.field("pwatermark").type == pa.float32()
    assert (pwatermark["watermark"] > 0.5).all() and (pwatermark["clean"] < 0.5).all()


def test_aesthetic_ranks_beautiful_scenes_above_ugly_ones(scored):
    """The generator's best and worst compositions (no overlays) come out in that order.

    The tiny aesthetic head is weak on fine differences (held-out Pearson r about 0.4, see
    docs/models.md), so the test asks for the ranking a user relies on: clear extremes.
    """
    _, stage, _ = scored
    pool = [sample(HELD_OUT + 5_000 + i, size=96, unsafe=False, watermark=False) for i in range(400)]
    pool.sort(key=lambda scene: scene.aesthetic)
    low, high = pool[:12], pool[-12:]
    assert high[0].aesthetic - low[-1].aesthetic > 3
    rows = [(f"{i:09d}", "x", scene.encode("JPEG", quality=90), scene.aesthetic) for i, scene in enumerate(low + high)]
    table = stage(_batch(rows))
    assert table.schema.field("aesthetic").type == pa.float32()
    predicted = np.array(table["aesthetic"].to_pylist())
    low_scores, high_scores = predicted[:12], predicted[12:]
    pairs_in_order = (high_scores[:, None] > low_scores[None, :]).mean()
    assert high_scores.mean() > low_scores.mean() + 0.5
    assert pairs_in_order > 0.75


def test_scores_only_alive_rows_and_marks_undecodable_images(scored):
    rows, stage, _ = scored
    batch = _batch(rows[:4] + [("000000099", "broken", b"not an image", 0.0)])
    batch = mark_dropped(batch, pa.array([True, False, False, False, False]), "earlier-stage")
    out = stage(batch)
    assert out.num_rows == batch.num_rows and out["key"].to_pylist() == batch["key"].to_pylist()
    assert out[DROP_REASON].to_pylist() == ["earlier-stage", None, None, None, UNDECODABLE]
    for column in ("punsafe", "pwatermark", "aesthetic"):
        values = out[column].to_pylist()
        assert values[0] is None and values[4] is None
        assert all(v is not None for v in values[1:4])


def test_reuses_the_embedding_clip_embed_left_in_the_batch(scored):
    """Chained after ClipEmbed (one transform), the stage scores from its embeddings, without the image bytes."""
    from laion_hf.stages.embed import ClipEmbed

    rows, _, table = scored
    embedded = ClipEmbed(TINY, multilingual=False)(_batch(rows))
    assert EMBEDDING_COLUMN in embedded.column_names
    out = ScoreStage(**{**TINY_MODELS, "watermark": None})(embedded.drop_columns(["image"]))
    assert "pwatermark" not in out.column_names
    np.testing.assert_allclose(out["punsafe"].to_numpy(), table["punsafe"].to_numpy(), atol=0.05)
    np.testing.assert_allclose(out["aesthetic"].to_numpy(), table["aesthetic"].to_numpy(), atol=0.3)

    wrong = _batch(rows[:2]).append_column(EMBEDDING_COLUMN, pa.array([[0.1] * 512] * 2, pa.list_(pa.float32())))
    with pytest.raises(UserError, match="64-d CLIP embeddings but the images' are 512-d"):
        ScoreStage(**{**TINY_MODELS, "watermark": None})(wrong)


def test_real_image_formats_score_as_they_are_displayed(scored):
    """Every real format scores like the picture it shows; the PNG that breaks while decoding is marked, not fatal."""
    _, stage, _ = scored
    batch, names = real_images.format_batch(real_images.photo())
    out = stage(batch)
    n = len(names)
    assert out[DROP_REASON].to_pylist() == [None] * (2 * n) + [UNDECODABLE]
    for column in ("punsafe", "pwatermark", "aesthetic"):
        values = np.array(out[column].to_pylist()[: 2 * n], dtype=np.float32)
        assert out[column][2 * n].as_py() is None
        np.testing.assert_allclose(values[:n], values[n:], atol=2e-3, err_msg=column)


def test_stage_pickles_without_its_models(scored):
    _, stage, _ = scored
    restored = pickle.loads(pickle.dumps(stage))
    assert restored._models == {} and set(stage._models) == {"punsafe", "pwatermark", "aesthetic", "clip"}
    assert restored == stage


def test_real_nsfw_detector_scores_a_precomputed_embedding_column(shared_dir):
    """LAION's B/32 SavedModel through the stage, on float16 embeddings as ClipEmbed stores them.

    The values must reach the detector unchanged (no re-normalisation): its
    vocabulary lookups match float16 values by their "%f" strings.
    """
    path = shared_dir / "models" / "nsfw_b32.zip"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    from laion_hf.models.tf_savedmodel import load_nsfw_savedmodel

    x = np.random.default_rng(0).standard_normal((6, 512))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float16()), 512)
    batch = pa.table({"key": [str(i) for i in range(6)], EMBEDDING_COLUMN: column})
    out = ScoreStage(nsfw=str(path), aesthetic=None, watermark=None)(batch)
    detector = load_nsfw_savedmodel(path)
    exact = torch.from_numpy(x.astype(np.float32))
    assert (detector.encoding(exact)[:, detector.encoding.columns] > 0).any()  # a vocabulary hit is exercised
    with torch.no_grad():
        expected = detector(exact).numpy()
    np.testing.assert_array_equal(out["punsafe"].to_numpy(), expected)


def test_threshold_stage_marks_with_reasons_and_ignores_nulls():
    batch = pa.table(
        {
            "punsafe": pa.array([0.1, 0.46, None, 0.45, 0.99], pa.float32()),
            "aesthetic": pa.array([6.0, 8.0, 2.0, 4.9, 1.0], pa.float32()),
        }
    )
    out = ThresholdStage(drop_above={"punsafe": 0.45}, drop_below={"aesthetic": 5})(batch)
    assert out[DROP_REASON].to_pylist() == [None, "punsafe>0.45", "aesthetic<5", "aesthetic<5", "punsafe>0.45"]
    with pytest.raises(UserError, match="no pwatermark column"):
        ThresholdStage(drop_above={"pwatermark": 0.8})(batch)


# --- LAION's heads under their published names --------------------------------------------------------------------


def test_laion_spec_reads_the_published_detector_under_its_published_name(shared_dir, tmp_path):
    from laion_hf.models.tf_savedmodel import load_nsfw_savedmodel
    from laion_hf.stages.score import head_path

    source = shared_dir / "models" / "nsfw_b32.zip"
    if not source.exists():
        pytest.skip(f"{source} is absent")
    (tmp_path / "clip_autokeras_nsfw_b32.zip").symlink_to(source)
    (tmp_path / "clip_autokeras_binary_nsfw").mkdir()  # the L/14 detector, unzipped as clip-retrieval keeps it
    assert head_path("nsfw", "laion", "ViT-B-32-quickgelu", str(tmp_path)) == tmp_path / "clip_autokeras_nsfw_b32.zip"
    assert head_path("nsfw", "laion", "ViT-L-14", str(tmp_path)) == tmp_path / "clip_autokeras_binary_nsfw"
    x = np.random.default_rng(1).standard_normal((4, 512))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    batch = pa.table({"key": list("abcd"), EMBEDDING_COLUMN: pa.FixedSizeListArray.from_arrays(
        pa.array(x.reshape(-1), pa.float16()), 512)})
    out = ScoreStage(aesthetic=None, watermark=None, clip="ViT-B-32", models_dir=str(tmp_path))(batch)
    with torch.no_grad():
        expected = load_nsfw_savedmodel(source)(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_array_equal(out["punsafe"].to_numpy(), expected)
