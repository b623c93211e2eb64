"""Score stage: the shipped tiny heads score the synthetic domain's overlays, columns and counts behave."""

from __future__ import annotations

import fractions
import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from laion_hf.core.errors import UserError
from laion_hf.core.stage import DROP_REASON, mark_dropped
from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import iter_samples, write_samples
from laion_hf.models.clip import TINY
from laion_hf.stages.score import EMBEDDING_COLUMN, UNDECODABLE, ScoreStage, ThresholdStage
from laion_hf.steps.score import score_shards
from laion_hf.testing.synthetic import sample
from tests.models import real_images
from tests.models.cli_entry import run_cli

HELD_OUT = 9_000_000  # seeds no tiny model was trained on
TINY_MODELS = {"nsfw": "tiny", "aesthetic": "tiny", "watermark": "tiny", "clip": TINY}  # the synthetic domain's
KINDS = {"clean": {}, "unsafe": {"unsafe": True}, "watermark": {"watermark": True}}


def _scenes(per_kind: int = 8, size: int = 96):
    """(key, kind, jpeg bytes, generator's aesthetic score) for clean, unsafe-motif and watermarked scenes."""
    rows = []
    for k, (kind, overlays) in enumerate(KINDS.items()):
        for i in range(per_kind):
            flags = {"unsafe": False, "watermark": False, **overlays}
            scene = sample(HELD_OUT + 100 * k + i, size=size, **flags)
            rows.append((f"{len(rows):09d}", kind, scene.encode("JPEG", quality=90), scene.aesthetic))
    return rows


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
    rows = _scenes()
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


def _write_shard(directory, rows):
    directory.mkdir(parents=True, exist_ok=True)
    write_samples(
        str(directory / "00000.tar"),
        ((key, {"jpg": data, "txt": kind.encode(), "json": b"{}"}) for key, kind, data, _ in rows),
    )
    meta = pa.table({"key": [r[0] for r in rows], "caption": [r[1] for r in rows], "status": ["success"] * len(rows)})
    pq.write_table(meta, directory / "00000.parquet")


@pytest.mark.slow
def test_score_shards_end_to_end_with_limits_and_cli(tmp_path):
    from typer.testing import CliRunner

    from laion_hf.cli import app

    rows = _scenes(per_kind=4, size=64)
    _write_shard(tmp_path / "in", rows)
    report = score_shards(
        str(tmp_path / "in"), str(tmp_path / "out"), **TINY_MODELS, drop_above={"punsafe": 0.5, "pwatermark": 0.5},
        batch_size=5, show_progress=False,
    )
    score, limits = report["stages"]
    assert score == {**score, "stage": "score", "rows_in": 12, "kept": 12, "dropped": {}}
    assert limits["rows_in"] == 12 and limits["kept"] + sum(limits["dropped"].values()) == 12
    kept = pq.read_table(tmp_path / "out" / "00000.parquet")
    removed = pq.read_table(tmp_path / "out" / "00000_removed.parquet")
    assert {"punsafe", "pwatermark", "aesthetic"} <= set(kept.column_names)
    kept_kinds = kept["caption"].to_pylist()
    assert kept_kinds.count("clean") >= 3 and kept_kinds.count("watermark") == 0
    assert set(removed[DROP_REASON].to_pylist()) <= {"punsafe>0.5", "pwatermark>0.5"}
    # Kept images are the original bytes, and the sample JSON carries the scores.
    originals = {key: data for key, _, data, _ in rows}
    for key, members in iter_samples(str(tmp_path / "out" / "00000.tar")):
        assert members["jpg"] == originals[key]
        assert set(json.loads(members["json"])) >= {"punsafe", "pwatermark", "aesthetic"}

    tiny = ["--nsfw", "tiny", "--watermark", "tiny", "--aesthetic", "tiny", "--clip", TINY]
    result = CliRunner().invoke(app, ["score", str(tmp_path / "in"), str(tmp_path / "cli"), *tiny, "--drop-above", "punsafe=0.5"])
    assert result.exit_code == 0, result.output
    assert "score" in result.output and len(discover_shards(str(tmp_path / "cli"))) == 1
    bad = CliRunner().invoke(app, ["score", str(tmp_path / "in"), str(tmp_path / "x"), "--drop-above", "colour=1"])
    assert bad.exit_code != 0 and "COLUMN=VALUE" in bad.output


# --- LAION's scores already in the data, LAION's heads by default, unreadable checkpoints ---------------------------

JOINED_PUNSAFE = [0.97, 0.02, 0.5, 0.1, 0.3, 0.46, 0.01, 0.2]  # LAION-joined values; > 0.45 at rows 0, 2, 5


@pytest.fixture(scope="module")
def joined_download(laion_pairs, tmp_path_factory):
    """An img2dataset shard of 8 real LAION pairs carrying LAION's joined columns, with real-format photos."""
    from laion_hf.core.hashing import laion_hash

    rng = np.random.default_rng(0)
    rows = []
    for i, pair in enumerate(laion_pairs.slice(100, len(JOINED_PUNSAFE)).to_pylist()):
        rows.append({
            "URL": pair["URL"], "TEXT": pair["TEXT"], "WIDTH": 640, "HEIGHT": 480,
            "similarity": float(rng.uniform(0.28, 0.4)), "hash": laion_hash(pair["URL"], pair["TEXT"]),
            "punsafe": JOINED_PUNSAFE[i], "pwatermark": float(rng.uniform(0, 1)),
        })
    directory = tmp_path_factory.mktemp("joined")
    real_images.write_shard(directory, rows, real_images.real_format_files(len(rows)))
    table = pq.read_table(directory / "00000.parquet")
    types = {"WIDTH": pa.int32(), "HEIGHT": pa.int32(), "punsafe": pa.float32(), "pwatermark": pa.float32()}
    for name, kind in types.items():  # LAION's joined metadata types
        table = table.set_column(table.column_names.index(name), name, table[name].cast(kind))
    pq.write_table(table, directory / "00000.parquet")
    return directory


TINY_FLAGS = ["--nsfw", "tiny", "--watermark", "tiny", "--aesthetic", "tiny", "--clip", TINY]


def _column(path, name) -> list:
    return pq.read_table(path / "00000.parquet")[name].to_pylist()


@pytest.mark.slow
def test_score_keeps_laions_scores_and_clean_still_removes_the_unsafe_rows(joined_download, tmp_path, monkeypatch,
                                                                           capsys):
    laion = np.array(JOINED_PUNSAFE, np.float32).tolist()
    watermark = _column(joined_download, "pwatermark")
    monkeypatch.setenv("LAION_HF_MODELS", str(tmp_path / "no-models"))  # LAION's heads are not on this machine

    # Every requested score is already there: nothing to compute, so no model is even looked for.
    code, out, err = run_cli(monkeypatch, capsys, "score", joined_download, tmp_path / "kept", "--aesthetic", "none")
    assert code == 0, err
    assert "punsafe: kept in 1 shard(s) (the input's own values)" in out and "pwatermark: kept in 1 shard(s)" in out
    assert _column(tmp_path / "kept", "punsafe") == laion

    # The tiny heads fill only what is missing (aesthetic); LAION's punsafe 0.97 and pwatermark stay.
    code, out, err = run_cli(monkeypatch, capsys, "score", joined_download, tmp_path / "scored", *TINY_FLAGS)
    assert code == 0, err
    assert "aesthetic: computed in 1 shard(s)" in out and "punsafe: kept in 1 shard(s)" in out
    assert _column(tmp_path / "scored", "punsafe") == laion
    assert _column(tmp_path / "scored", "pwatermark") == watermark
    assert None not in _column(tmp_path / "scored", "aesthetic")

    # ... so Re-LAION's research-safe variant still removes the rows LAION scored above 0.45.
    code, out, err = run_cli(monkeypatch, capsys, "clean", tmp_path / "scored", tmp_path / "clean", "--variant",
                          "research-safe")
    assert code == 0, err
    keys = _column(joined_download, "key")
    assert _column(tmp_path / "clean", "key") == [k for k, p in zip(keys, JOINED_PUNSAFE) if p <= 0.45]

    # Replacing LAION's values is a choice: --overwrite, or the new score under a name of one's own.
    code, out, err = run_cli(monkeypatch, capsys, "score", joined_download, tmp_path / "over", *TINY_FLAGS, "--overwrite")
    assert code == 0, err
    assert "punsafe: computed in 1 shard(s)" in out and _column(tmp_path / "over", "punsafe") != laion
    code, out, err = run_cli(monkeypatch, capsys, "score", joined_download, tmp_path / "renamed", *TINY_FLAGS,
                          "--output-column", "punsafe=punsafe_tiny")
    assert code == 0, err
    assert "punsafe_tiny: computed in 1 shard(s)" in out
    assert _column(tmp_path / "renamed", "punsafe") == laion
    assert _column(tmp_path / "renamed", "punsafe_tiny") == _column(tmp_path / "over", "punsafe")


def test_default_heads_are_laions_and_a_missing_one_says_how_to_get_it(joined_download, tmp_path, monkeypatch,
                                                                        capsys):
    models = tmp_path / "models"
    code, out, err = run_cli(monkeypatch, capsys, "score", joined_download, tmp_path / "out", "--overwrite",
                          "--models-dir", models)
    assert code == 2
    assert f"{models}/clip_autokeras_binary_nsfw.zip: LAION's nsfw checkpoint is not on this machine" in err
    assert "github.com/LAION-AI/CLIP-based-NSFW-Detector" in err and "--nsfw tiny" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


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


def _not_a_checkpoint(path) -> None:
    if path.suffix == ".safetensors":
        path.write_bytes(b"hello, not a safetensors header")
    elif path.name.startswith("pickled"):
        torch.save({"weights": fractions.Fraction(1, 3)}, path)
    else:
        path.write_bytes(b"a checkpoint it is not")


@pytest.mark.parametrize(
    ("option", "filename", "loader_error"),
    [
        ("--aesthetic", "aesthetic.pth", "IndexError: pop from empty list"),
        ("--nsfw", "nsfw.safetensors", "SafetensorError"),
        ("--watermark", "pickled-watermark.pt", "UnpicklingError"),
        ("--clip-pretrained", "clip.pt", "IndexError: pop from empty list"),
    ],
)
def test_an_unreadable_checkpoint_is_exit_2_naming_the_file(joined_download, tmp_path, monkeypatch, capsys, option,
                                                            filename, loader_error):
    path = tmp_path / filename
    _not_a_checkpoint(path)
    flags = dict(zip(TINY_FLAGS[::2], TINY_FLAGS[1::2])) | {option: str(path)}
    args = [a for pair in flags.items() for a in pair]
    code, out, err = run_cli(monkeypatch, capsys, "score", joined_download, tmp_path / "out", "--overwrite", *args)
    assert code == 2
    assert f"{path}: not a readable" in err and loader_error in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
