"""The score step: ``score_shards`` and ``laion-hf score`` over img2dataset shards, LAION's own scores kept."""

from __future__ import annotations

import fractions
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from laion_hf.core.stage import DROP_REASON
from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import iter_samples, write_samples
from laion_hf.models.clip import TINY
from laion_hf.steps.score import score_shards
from tests.models import real_images
from tests.models.cli_entry import run_cli
from tests.score_scenes import TINY_MODELS, scenes


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

    rows = scenes(per_kind=4, size=64)
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
