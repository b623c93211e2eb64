"""dedup: exact (LAION hash) and near (pHash) duplicates across all shards, keepers recorded."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_hf.core.hashing import laion_hash
from laion_hf.io.shards import discover_shards
from laion_hf.io.tar import iter_samples, write_samples
from laion_hf.stages.duplicates import (
    DEFAULT_MAX_DISTANCE,
    DUPLICATE_HASH,
    DUPLICATE_OF,
    EMBEDDING_SIMHASH,
    NEAR_DUPLICATE_EMBEDDING,
    NEAR_DUPLICATE_PHASH,
    embedding_files,
    embedding_signatures,
    perceptual_hash,
)
from laion_hf.steps.dedup import dedup_shards
from laion_hf.testing.synthetic import sample


def encode(image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def distance(a: bytes, b: bytes) -> int:
    return ((perceptual_hash(a) ^ perceptual_hash(b)) & (2**64 - 1)).bit_count()


IMAGE_A = sample(1).image
IMAGE_B = sample(2).image
A = encode(IMAGE_A)
A_JPEG = encode(IMAGE_A, "JPEG", quality=95)  # a re-encode of A
A_SMALLER = encode(IMAGE_A.resize((56, 56)))  # a resize of A
B = encode(IMAGE_B)
C, D, E = (encode(sample(seed).image) for seed in (3, 4, 5))

#: shard -> [(key, url, caption, image)]; url+caption equal => same LAION hash.
SHARDS = {
    "00000": [
        ("000000000", "http://a.example/1.png", "a red circle", A),
        ("000000001", "http://a.example/2.png", "a blue square", B),
        ("000000002", "http://b.example/a-copy.jpg", "copy of a", A_JPEG),  # near A
    ],
    "00001": [
        ("000010000", "http://a.example/1.png", "a red circle", C),  # same hash as 000000000
        ("000010001", "http://c.example/d.png", "something else", D),
        ("000010002", "http://d.example/b.png", "b again", B),  # near (identical to) B
        ("000010003", "http://b.example/a-copy.jpg", "copy of a", E),  # same hash as 000000002, itself removed
        ("000010004", "http://e.example/a-small.png", "a smaller", A_SMALLER),  # near A
    ],
}
EXPECTED_REMOVED = {
    "000000002": ("000000000", NEAR_DUPLICATE_PHASH),
    "000010000": ("000000000", DUPLICATE_HASH),
    "000010002": ("000000001", NEAR_DUPLICATE_PHASH),
    "000010003": ("000000000", DUPLICATE_HASH),  # its twin 000000002 is removed: points at the row kept
    "000010004": ("000000000", NEAR_DUPLICATE_PHASH),
}
ALL_KEYS = {row[0] for rows in SHARDS.values() for row in rows}


def write_input(directory: Path) -> Path:
    """Two img2dataset-layout shards (tar + parquet, with the failed-row convention: one row not in the tar)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in SHARDS.items():
        write_samples(
            str(directory / f"{name}.tar"),
            ((key, {"png": image, "txt": caption.encode(), "json": json.dumps({"key": key}).encode()})
             for key, _, caption, image in rows),
        )
        failed = (f"{name}9999", "http://gone.example/x.png", "a red circle", None)
        table_rows = [*rows, failed]
        pq.write_table(
            pa.table({
                "key": [r[0] for r in table_rows],
                "url": [r[1] for r in table_rows],
                "caption": [r[2] for r in table_rows],
                "hash": [laion_hash(r[1], r[2]) for r in table_rows],
                "status": ["success"] * len(rows) + ["failed_to_download"],
            }),
            directory / f"{name}.parquet",
        )
    return directory


def test_fixture_images_are_near_or_far_as_intended():
    assert distance(A, A_JPEG) <= 4 and distance(A, A_SMALLER) <= 4
    for other in (B, C, D, E):
        assert distance(A, other) > 8
    assert perceptual_hash(b"not an image") is None


def test_a_photo_stored_sideways_with_exif_orientation_hashes_as_displayed():
    from laion_hf.demo.photos import real_photos

    upright, _, cmyk, webp, sideways = real_photos()
    assert sideways.data != upright.data
    for copy in (cmyk, webp, sideways):
        assert distance(copy.data, upright.data) <= DEFAULT_MAX_DISTANCE


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


def write_embeddings(directory: Path, near_pairs: dict[str, str], dim: int = 32) -> Path:
    """A clip-retrieval folder (img_emb + metadata per shard): random unit vectors, except that each key of
    ``near_pairs`` gets its partner's vector plus a little noise (cosine > 0.999)."""
    rng = np.random.default_rng(7)
    vectors = {key: rng.standard_normal(dim) for key in sorted(ALL_KEYS)}
    for key, partner in near_pairs.items():
        vectors[key] = vectors[partner] + 0.01 * rng.standard_normal(dim)
    for name, rows in SHARDS.items():
        keys = [row[0] for row in rows]
        (directory / "img_emb").mkdir(parents=True, exist_ok=True)
        (directory / "metadata").mkdir(parents=True, exist_ok=True)
        matrix = np.stack([vectors[k] / np.linalg.norm(vectors[k]) for k in keys]).astype(np.float16)
        np.save(directory / "img_emb" / f"img_emb_{name}.npy", matrix)
        pq.write_table(pa.table({"key": keys}), directory / "metadata" / f"metadata_{name}.parquet")
    return directory


def test_embedding_near_duplicates_are_removed_with_their_keeper(tmp_path):
    source = write_input(tmp_path / "in")
    embeddings = write_embeddings(tmp_path / "emb", {"000010001": "000000001"})  # D looks like B to CLIP
    report = dedup_shards(str(source), str(tmp_path / "out"), embeddings=str(embeddings), show_progress=False)
    assert removed_by_key(tmp_path / "out") == {**EXPECTED_REMOVED, "000010001": ("000000001", NEAR_DUPLICATE_EMBEDDING)}
    assert report.stats.dropped[NEAR_DUPLICATE_EMBEDDING] == 1


def test_embedding_signatures_estimate_the_angle(tmp_path):
    embeddings = write_embeddings(tmp_path / "emb", {"000010001": "000000001"})
    table = pa.concat_tables(embedding_signatures(str(embeddings), name) for name in embedding_files(str(embeddings)))
    simhash = dict(zip(table["key"].to_pylist(), table[EMBEDDING_SIMHASH].to_pylist()))
    assert set(simhash) == ALL_KEYS
    bits = lambda a, b: ((simhash[a] ^ simhash[b]) & (2**64 - 1)).bit_count()  # noqa: E731
    assert bits("000010001", "000000001") <= 2
    assert 16 <= bits("000000000", "000000001") <= 48  # unrelated vectors: about half the bits differ


def test_embedding_folder_that_does_not_match_its_metadata_is_refused(tmp_path):
    from laion_hf.stages.duplicates import DedupError

    embeddings = write_embeddings(tmp_path / "emb", {})
    np.save(embeddings / "img_emb" / "img_emb_00000.npy", np.zeros((1, 32), np.float16))
    with pytest.raises(DedupError, match="metadata_00000.parquet: 3 rows but img_emb_00000.npy holds 1"):
        embedding_signatures(str(embeddings), "00000")
