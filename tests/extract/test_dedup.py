"""The on-disk partitioned dedup: first occurrence in input order wins, whatever the partitioning."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_hf.extract.dedup import find_global_duplicates, pair_keys


def shard(tmp_path, name: str, pairs: list[tuple[str, str]]) -> str:
    path = str(tmp_path / f"{name}.parquet")
    urls, captions = zip(*pairs) if pairs else ((), ())
    pq.write_table(pa.table({"url": pa.array(urls, pa.string()), "caption": pa.array(captions, pa.string())}), path)
    return path


@pytest.mark.parametrize("partitions", [2, 64])
def test_repeats_across_shards_are_found_after_their_first_occurrence(tmp_path, partitions):
    a = shard(tmp_path, "a", [("u1", "c1"), ("u2", "c2"), ("u1", "c1")])
    empty = shard(tmp_path, "empty", [])
    b = shard(tmp_path, "b", [("u2", "c2"), ("u3", "c3"), ("ab", "c"), ("a", "bc")])
    c = shard(tmp_path, "c", [("u3", "c3"), ("u1", "c1"), ("u4", "c4")])
    work = str(tmp_path / "work")
    duplicates = find_global_duplicates([a, empty, b, c], work, partitions=partitions)
    assert [d.tolist() for d in duplicates] == [[2], [], [0], [0, 1]]
    assert not os.path.exists(work)


def test_many_rows_match_an_in_memory_set(tmp_path):
    rng = np.random.default_rng(3)
    shards, seen, expected = [], set(), []
    for index in range(5):
        pairs = [(f"https://x/{v}.jpg", f"caption {v % 7}") for v in rng.integers(0, 3000, 2000)]
        shards.append(shard(tmp_path, f"s{index}", pairs))
        rows = []
        for row, pair in enumerate(pairs):
            if pair in seen:
                rows.append(row)
            seen.add(pair)
        expected.append(rows)
    got = find_global_duplicates(shards, str(tmp_path / "work"), partitions=8)
    assert [g.tolist() for g in got] == expected


def test_keys_separate_url_and_caption():
    hi, lo = pair_keys(["ab", "a"], ["c", "bc"])
    assert (hi[0], lo[0]) != (hi[1], lo[1])


def test_partitions_must_be_a_power_of_two(tmp_path):
    with pytest.raises(ValueError, match="power of two"):
        find_global_duplicates([], str(tmp_path / "w"), partitions=3)
