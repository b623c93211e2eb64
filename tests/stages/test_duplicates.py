"""The duplicate rules' parts: perceptual hashes as displayed, SimHashes of CLIP embeddings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from laion_hf.stages.duplicates import (
    DEFAULT_MAX_DISTANCE,
    EMBEDDING_SIMHASH,
    DedupError,
    band_count,
    embedding_files,
    embedding_signatures,
    perceptual_hash,
)
from tests.dedup_inputs import A_JPEG, A_SMALLER, ALL_KEYS, A, B, C, D, E, write_embeddings


def distance(a: bytes, b: bytes) -> int:
    return ((perceptual_hash(a) ^ perceptual_hash(b)) & (2**64 - 1)).bit_count()


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


def test_embedding_signatures_estimate_the_angle(tmp_path):
    embeddings = write_embeddings(tmp_path / "emb", {"000010001": "000000001"})
    table = pa.concat_tables(embedding_signatures(str(embeddings), name) for name in embedding_files(str(embeddings)))
    simhash = dict(zip(table["key"].to_pylist(), table[EMBEDDING_SIMHASH].to_pylist()))
    assert set(simhash) == ALL_KEYS
    bits = lambda a, b: ((simhash[a] ^ simhash[b]) & (2**64 - 1)).bit_count()  # noqa: E731
    assert bits("000010001", "000000001") <= 2
    assert 16 <= bits("000000000", "000000001") <= 48  # unrelated vectors: about half the bits differ


def test_embedding_folder_that_does_not_match_its_metadata_is_refused(tmp_path):
    embeddings = write_embeddings(tmp_path / "emb", {})
    np.save(embeddings / "img_emb" / "img_emb_00000.npy", np.zeros((1, 32), np.float16))
    with pytest.raises(DedupError, match="metadata_00000.parquet: 3 rows but img_emb_00000.npy holds 1"):
        embedding_signatures(str(embeddings), "00000")


def test_the_index_grows_its_bands_with_the_run():
    assert band_count(4, 1_000) == 5  # one band each: few keys, few rows to compare
    assert band_count(4, 1_000_000) == 6  # 15 keys of 21 bits: ~0.5 random candidates per value
    assert band_count(4, 100_000_000) == 7
