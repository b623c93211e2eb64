"""The generated sample copy looks like a real one (two parts that do not line up), and the demo cleans it."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest

from laion_hf.clean import load_removal_sets, verify_clean
from laion_hf.core.hashing import laion_hash
from laion_hf.core.schema import IMG2DATASET, LAION_5B_JOINED
from laion_hf.demo import clean_sample_copy, generate_sample_copy
from laion_hf.io.tar import iter_samples


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    return generate_sample_copy(tmp_path_factory.mktemp("demo") / "copy", rows_per_shard=200, download_shards=2)


def test_metadata_is_laion_5b_joined_with_real_world_quirks(copy):
    names = sorted(f.name for f in copy.metadata_dir.iterdir())
    parts = [n for n in names if re.fullmatch(r"part-\d{5}-[0-9a-f-]{36}-c000\.snappy\.parquet", n)]
    assert len(parts) == 2  # Spark's output, as LAION published it: parts, hidden checksums, _SUCCESS
    assert names == sorted([*parts, *(f".{p}.crc" for p in parts), "_SUCCESS", "._SUCCESS.crc"])
    files = [copy.metadata_dir / p for p in parts]
    table = pq.read_table(files[0])
    assert table.schema.equals(LAION_5B_JOINED)
    rows = table.to_pylist()
    assert all(r["hash"] == laion_hash(r["URL"], r["TEXT"]) for r in rows)
    captions = [r["TEXT"] for r in rows]
    assert None in captions and "" in captions
    assert len({(r["URL"], r["TEXT"]) for r in rows}) < len(rows)  # duplicated rows
    scores = [r["punsafe"] for r in rows]
    assert None in scores
    for threshold in (0.45, 0.95):  # scores exactly at the variant thresholds (stored as float32)
        assert any(s is not None and abs(s - threshold) < 1e-6 for s in scores)


def test_download_is_an_img2dataset_layout_in_completion_order(copy):
    metadata_pairs = {(r["URL"], r["TEXT"]) for f in copy.metadata_dir.glob("part-*.parquet") for r in pq.read_table(f).to_pylist()}
    for sidecar in sorted(copy.download_dir.glob("*.parquet")):
        table = pq.read_table(sidecar)
        assert table.schema.equals(IMG2DATASET)
        rows = table.to_pylist()
        keys = [r["key"] for r in rows]
        assert all(re.fullmatch(sidecar.stem + r"\d{4}", k) for k in keys)
        assert keys != sorted(keys)  # completion order, not input order
        assert all((r["url"], r["caption"]) in metadata_pairs for r in rows)
        success = {r["key"]: r for r in rows if r["status"] == "success"}
        assert 0 < len(success) < len(rows)  # failed samples exist, only in the sidecar
        samples = dict(iter_samples(str(sidecar.with_suffix(".tar"))))
        assert set(samples) == set(success)
        formats = Counter()
        for key, members in samples.items():
            [image] = set(members) - {"txt", "json"}
            formats[image] += 1
            # the sidecar hashes the original download; the tar holds re-encoded bytes
            assert hashlib.sha256(members[image]).hexdigest() != success[key]["sha256"]
            assert json.loads(members["json"])["key"] == key
        assert set(formats) == {"jpg", "png", "webp"}  # the formats LAION shards hold, mixed in one shard
        stats = json.loads(sidecar.with_name(f"{sidecar.stem}_stats.json").read_text())
        assert stats["count"] == len(rows) and stats["successes"] == len(success)


def test_removal_lists_are_valid_and_hit_the_copy(copy):
    sets = load_removal_sets(copy.removal)
    assert sets.invalid == 0
    assert {kind for kind, _ in copy.removal} == {"url-sha256", "image-sha256", "laion-hash"}
    assert "  " in (copy.root / "lists" / "url-sha256.txt").read_text()  # stray whitespace, mixed case on purpose


def test_generation_is_deterministic(copy, tmp_path):
    again = generate_sample_copy(tmp_path / "again", rows_per_shard=200, download_shards=2)
    for path in sorted(copy.root.rglob("*.*")):
        assert (again.root / path.relative_to(copy.root)).read_bytes() == path.read_bytes(), path


def test_clean_sample_copy_gives_verified_research_and_research_safe(copy, tmp_path):
    reports = clean_sample_copy(copy, tmp_path / "out")
    assert set(reports) == {"research", "research-safe"}
    for variant, parts in reports.items():
        for part, report in parts.items():
            report.check()
            assert verify_clean(str(tmp_path / "out" / variant / part), copy.removal if part == "download" else
                                [s for s in copy.removal if not s[0].startswith("image-")]) == []
        assert parts["download"].by_reason["image-sha256"] > 0
        assert parts["metadata"].by_reason["image-sha256"] > 0  # the metadata no longer points at listed images
    safe, research = reports["research-safe"], reports["research"]
    assert safe["metadata"].by_reason["punsafe"] > research["metadata"].by_reason["punsafe"]
    assert safe["download"].total.kept < research["download"].total.kept
