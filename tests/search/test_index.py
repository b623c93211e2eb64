"""Building and opening kNN indices: factory by size, recall against exact search, alignment with metadata, bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_hf.search.index import INFO_FILE, METADATA_FILE, KnnIndex, KnnIndexError, build_index, choose_factory
from laion_hf.search.source import SourceError, open_source
from laion_hf.testing.vectors import random_vectors, write_embedding_folder


def _metadata(rows: int, offset: int = 0) -> pa.Table:
    return pa.table({
        "URL": [f"http://images.example/{offset + i}.jpg" for i in range(rows)],
        "TEXT": [f"caption {offset + i}" for i in range(rows)],
        "key": [f"{offset + i:09d}" for i in range(rows)],
    })


def test_factory_follows_size_and_memory_budget():
    assert choose_factory(9_999, 512) == "Flat"
    assert choose_factory(200_000, 64) == "IVF2048,SQfp16"
    assert choose_factory(1_000_000, 768) == "IVF4096,SQfp16"
    # 100M ViT-L/14 rows: fp16 (154 GB) and 8-bit (78 GB) codes exceed 16 GB, 128-byte PQ codes fit
    assert choose_factory(100_000_000, 768) == "OPQ128,IVF32768_HNSW32,PQ128x8np"
    assert choose_factory(1_000_000, 768, max_memory=1 << 30) == "IVF4096,SQ8"
    with pytest.raises(KnnIndexError, match="do not fit in 1,000 bytes"):
        choose_factory(1_000_000, 768, max_memory=1000)


@pytest.mark.slow
def test_recall_at_10_against_exact_search_on_200k_vectors(tmp_path):
    rows, dim, held_out = 200_000, 64, 500
    vectors = random_vectors(rows + held_out, dim, clusters=1000, spread=1.2, seed=0)
    write_embedding_folder(tmp_path / "emb", vectors[:rows], _metadata(rows), rows_per_shard=60_000)
    info = build_index(tmp_path / "emb", tmp_path / "index", model="laion-hf-tiny", threads=2)
    assert info.rows == rows and info.dimension == dim
    image = info.indices["image"]
    assert image.factory == "IVF2048,SQfp16"
    assert image.recall_at_10 >= 0.95 and image.recall_queries == 500
    recorded = json.loads((tmp_path / "index" / INFO_FILE).read_text())
    assert recorded["indices"]["image"]["recall_at_10"] == image.recall_at_10
    assert recorded["model"] == {"name": "laion-hf-tiny", "pretrained": None, "checksums": {}}
    # measured again here, on queries the index never saw, against numpy's exact answer on the fp16 vectors
    index = KnnIndex(tmp_path / "index")
    queries = vectors[rows:]
    stored = vectors[:rows].astype(np.float16).astype(np.float32)
    exact = np.argsort(-(queries @ stored.T), axis=1)[:, :10]
    _, found = index.search("image", queries, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.95, recall


def test_quantised_and_hnsw_coarse_factories_build_tune_and_open(tmp_path):
    vectors = random_vectors(11_000, 16, clusters=50, spread=1.0, seed=8)
    write_embedding_folder(tmp_path / "emb", vectors, _metadata(11_000))
    for factory in ("IVF16,PQ4x8np", "IVF16_HNSW32,SQ8"):
        info = build_index(tmp_path / "emb", tmp_path / "index", model="laion-hf-tiny", factory=factory, threads=1)
        entry = info.indices["image"]
        assert entry.factory == factory and entry.search_params.startswith("nprobe=")
        assert ("quantizer_efSearch" in entry.search_params) == ("HNSW" in factory)
        index = KnnIndex(tmp_path / "index")
        _, ids = index.search("image", vectors[:5], 10)
        assert 0 < entry.recall_at_10 <= 1 and all(row in found for row, found in enumerate(ids))


def test_metadata_is_aligned_row_for_row_across_shards(tmp_path):
    vectors = random_vectors(250, 16, seed=1)
    metadata = _metadata(250)
    write_embedding_folder(tmp_path / "emb", vectors, metadata, text=vectors[::-1].copy(), rows_per_shard=100)
    # the second shard also carries scores: the index keeps the column, null where a shard lacks it
    path = tmp_path / "emb" / "metadata" / "metadata_00001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.append_column("punsafe", pa.array(np.linspace(0, 1, 100), pa.float64())), path)
    info = build_index(tmp_path / "emb", tmp_path / "index", model="laion-hf-tiny")
    assert info.indices["image"].factory == "Flat" and info.indices["image"].recall_at_10 == 1.0
    assert info.columns == ["url", "caption", "key", "punsafe"]
    assert [s["rows"] for s in info.shards] == [100, 100, 50]
    index = KnnIndex(tmp_path / "index")
    for row in (0, 99, 100, 149, 249):
        scores, ids = index.search("image", vectors[row : row + 1], 1)
        assert ids[0, 0] == row and scores[0, 0] == pytest.approx(1.0, abs=1e-3)
        found = index.rows([row])[0]
        assert found["url"] == f"http://images.example/{row}.jpg" and found["caption"] == f"caption {row}"
        assert found["punsafe"] == (pytest.approx(np.linspace(0, 1, 100)[row - 100]) if 100 <= row < 200 else None)
        _, text_ids = index.search("text", vectors[row : row + 1], 1)
        assert text_ids[0, 0] == 249 - row


def _demo_folder(tmp_path, rows=40):
    write_embedding_folder(tmp_path / "emb", random_vectors(rows, 8, seed=2), _metadata(rows), rows_per_shard=20)
    return tmp_path / "emb"


def test_rows_and_vectors_that_disagree_name_the_file(tmp_path):
    folder = _demo_folder(tmp_path)
    pq.write_table(_metadata(19), folder / "metadata" / "metadata_00001.parquet")
    with pytest.raises(SourceError, match=r"img_emb_00001.npy: 20 vectors but metadata_00001.parquet has 19 rows"):
        open_source(folder)


def test_missing_metadata_and_corrupt_vectors_name_the_file(tmp_path):
    folder = _demo_folder(tmp_path)
    (folder / "metadata" / "metadata_00000.parquet").unlink()
    with pytest.raises(SourceError, match=r"img_emb_00000.npy: no metadata for it"):
        open_source(folder)
    folder = _demo_folder(tmp_path / "b")
    (folder / "img_emb" / "img_emb_00001.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(SourceError, match=r"img_emb_00001.npy: not a readable .npy"):
        open_source(folder)


def test_configs_are_found_under_a_build_and_chosen_by_name(tmp_path):
    for config in ("research", "research-safe"):
        write_embedding_folder(tmp_path / "build" / "configs" / config, random_vectors(30, 8, seed=3), _metadata(30))
    with pytest.raises(SourceError, match=r"several configs \(research, research-safe\); pass --config"):
        open_source(tmp_path / "build")
    with pytest.raises(SourceError, match=r"unknown config 'safe'; it has embeddings of: research, research-safe"):
        open_source(tmp_path / "build", "safe")
    source = open_source(tmp_path / "build", "research-safe")
    assert source.config == "research-safe" and source.rows == 30
    with pytest.raises(SourceError, match="no clip-retrieval embeddings"):
        open_source(tmp_path / "build" / "configs" / "research" / "metadata")


def test_the_model_must_be_known_and_consistent(tmp_path):
    folder = _demo_folder(tmp_path)
    with pytest.raises(KnnIndexError, match="pass --model"):
        build_index(folder, tmp_path / "index")
    (folder / "embedding_model.json").write_text(json.dumps({"name": "ViT-B-32", "pretrained": "openai",
                                                             "checksums": {"ViT-B-32.pt": "ab" * 32}}))
    with pytest.raises(KnnIndexError, match="computed with 'ViT-B-32'.*not --model 'laion-hf-tiny'"):
        build_index(folder, tmp_path / "index", model="laion-hf-tiny")
    info = build_index(folder, tmp_path / "index")
    assert info.model == {"name": "ViT-B-32", "pretrained": "openai", "checksums": {"ViT-B-32.pt": "ab" * 32}}


def test_corrupt_or_incomplete_index_files_are_named(tmp_path):
    build_index(_demo_folder(tmp_path), tmp_path / "index", model="laion-hf-tiny")
    index_file = tmp_path / "index" / "image.index"
    original = index_file.read_bytes()
    index_file.write_bytes(original[: len(original) // 2])
    with pytest.raises(KnnIndexError, match=r"image.index: not a readable faiss index"):
        KnnIndex(tmp_path / "index")
    index_file.write_bytes(original)
    (tmp_path / "index" / METADATA_FILE).write_bytes(b"ARROW1 not really")
    with pytest.raises(KnnIndexError, match=r"metadata.arrow: not a readable Arrow file"):
        KnnIndex(tmp_path / "index")
    (tmp_path / "index" / INFO_FILE).write_text("{not json")
    with pytest.raises(KnnIndexError, match=r"index_info.json: not a valid index description"):
        KnnIndex(tmp_path / "index")
    (tmp_path / "index" / INFO_FILE).unlink()
    with pytest.raises(KnnIndexError, match="not a laion-hf index"):
        KnnIndex(tmp_path / "index")
