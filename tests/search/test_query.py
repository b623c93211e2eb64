"""Queries embedded with the index's own model, on a real filter output; filters with over-fetch; model checks."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow as pa
import pytest

from laion_hf.search.index import INFO_FILE, KnnIndex, KnnIndexError, build_index
from laion_hf.search.query import Filters, ModelMismatchError, QueryError, Searcher
from laion_hf.testing.vectors import random_vectors, write_embedding_folder


@pytest.mark.slow
def test_text_query_returns_the_scenes_it_describes(demo_index):
    searcher = Searcher(KnnIndex(demo_index.index))
    wanted = {key for key, scene in demo_index.truth.items()
              if (scene.shape, scene.colour, scene.background) == ("circle", "red", "white")}
    assert len(wanted) == 3
    results = searcher.search(searcher.embed_text("a red circle on a white background"), k=10)
    assert {row["key"] for row in results[:3]} == wanted
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert set(results[0]) >= {"id", "score", "url", "caption", "key", "similarity", "language", "shard"}


@pytest.mark.slow
def test_image_query_finds_its_own_sample_first(demo_index):
    searcher = Searcher(KnnIndex(demo_index.index))
    key = next(k for k, scene in demo_index.truth.items() if scene.shape == "star")
    with tarfile.open(demo_index.filtered / f"{key[:5]}.tar") as tar:
        data = tar.extractfile(f"{key}.jpg").read()
    results = searcher.search(searcher.embed_image(data), k=5)
    assert results[0]["key"] == key and results[0]["score"] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(QueryError, match="upload.png: not a readable image"):
        searcher.embed_image(b"not an image", "upload.png")


@pytest.mark.slow
def test_the_index_model_is_the_only_model(demo_index, tmp_path):
    index = KnnIndex(demo_index.index)
    with pytest.raises(ModelMismatchError, match="built from 'laion-hf-tiny' embeddings.*--model 'ViT-B-32'"):
        Searcher(index, model="ViT-B-32")
    with pytest.raises(QueryError, match="empty query"):
        Searcher(index).embed_text("   ")
    # an index that records other weights of the same architecture
    forged = tmp_path / "other-weights"
    forged.mkdir()
    for path in demo_index.index.iterdir():
        (forged / path.name).write_bytes(path.read_bytes())
    info = json.loads((forged / INFO_FILE).read_text())
    info["model"]["checksums"] = {"tiny-retrained.safetensors": "0" * 64}
    (forged / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(ModelMismatchError, match="weights .* are not the ones the index recorded"):
        Searcher(KnnIndex(forged)).embed_text("a red circle")


def test_a_model_of_another_dimension_is_refused(tmp_path):
    write_embedding_folder(tmp_path / "emb", random_vectors(30, 32, seed=4),
                           pa.table({"key": [str(i) for i in range(30)]}))
    build_index(tmp_path / "emb", tmp_path / "index", model="laion-hf-tiny")
    with pytest.raises(ModelMismatchError, match="embeds into 64 dimensions, the index holds 32"):
        Searcher(KnnIndex(tmp_path / "index")).embed_text("a red circle on a white background")


@pytest.fixture(scope="module")
def scored_index(tmp_path_factory):
    """2,000 rows, scores on every row: only every fifth row is safe, language cycles en/de/fr/es."""
    root = tmp_path_factory.mktemp("scored")
    rows = 2_000
    vectors = random_vectors(rows, 16, clusters=4, spread=0.8, seed=5)
    metadata = pa.table({
        "url": [f"http://images.example/{i}.jpg" for i in range(rows)],
        "caption": [f"caption {i}" for i in range(rows)],
        "key": [f"{i:09d}" for i in range(rows)],
        "language": [["en", "de", "fr", "es"][i % 4] for i in range(rows)],
        "punsafe": pa.array([0.1 if i % 5 == 0 else 0.9 for i in range(rows)], pa.float32()),
        "aesthetic": pa.array([None if i == 0 else float(i % 10) for i in range(rows)], pa.float32()),
    })
    write_embedding_folder(root / "emb", vectors, metadata, rows_per_shard=700)
    build_index(root / "emb", root / "index", model="laion-hf-tiny")
    return KnnIndex(root / "index"), vectors


def test_filters_over_fetch_until_k_rows_pass(scored_index):
    index, vectors = scored_index
    searcher = Searcher(index)
    query = vectors[:1]
    unfiltered = searcher.search(query, k=30)
    safe = searcher.search(query, k=30, filters=Filters(max_punsafe=0.45))
    assert len(safe) == 30 and all(r["punsafe"] <= 0.45 for r in safe)
    assert sum(r["punsafe"] <= 0.45 for r in unfiltered) < 30  # the first 30 neighbours alone would not do
    # the safe rows come back in the order of the unfiltered ranking
    _, order = index.search("image", query, index.info.rows)
    safe_order = [int(i) for i in order[0] if i % 5 == 0][:30]
    assert [r["id"] for r in safe] == safe_order
    german = searcher.search(query, k=25, filters=Filters(language="DE", min_aesthetic=5))
    assert len(german) == 25 and all(r["language"] == "de" and r["aesthetic"] >= 5 for r in german)
    # more than the index can give: every passing row, no more
    strict = searcher.search(query, k=5_000, filters=Filters(max_punsafe=0.45, language="en"))
    assert len(strict) == len([i for i in range(2_000) if i % 5 == 0 and i % 4 == 0]) == 100


def test_a_null_score_fails_a_score_filter(scored_index):
    index, vectors = scored_index
    results = Searcher(index).search(vectors[:1], k=2_000, filters=Filters(min_aesthetic=0))
    assert 0 not in {r["id"] for r in results} and len(results) == 1_999


def test_a_filter_on_a_column_the_index_lacks_is_refused(tmp_path):
    write_embedding_folder(tmp_path / "emb", random_vectors(30, 8, seed=6), pa.table({"key": [str(i) for i in range(30)]}))
    build_index(tmp_path / "emb", tmp_path / "index", model="laion-hf-tiny")
    searcher = Searcher(KnnIndex(tmp_path / "index"))
    with pytest.raises(QueryError, match="cannot filter on punsafe: the index has no punsafe column"):
        searcher.search(np.ones((1, 8), np.float32), k=3, filters=Filters(max_punsafe=0.45))


def test_unknown_modality_is_refused(scored_index):
    index, vectors = scored_index
    with pytest.raises(KnnIndexError, match="no text index"):
        Searcher(index).search(vectors[:1], k=3, modality="text")
