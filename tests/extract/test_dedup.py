"""The cross-file dedup's shuffle: first occurrence in input order wins, however files and keys are cut."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_hf.extract.dedup import PairShuffle, find_duplicates, group_duplicates, pair_keys, write_keys


def find_global_duplicates(files: list[str], work: str, partitions: int, group_starts=(0,)) -> list[list[int]]:
    """The three maps in order, in this process (the extract step hands them to a runner)."""
    shuffle = PairShuffle(tuple(files), work, partitions, group_starts)
    for group in range(shuffle.groups):
        write_keys(group, shuffle)
    found = sum(find_duplicates(partition, shuffle)["duplicates"] for partition in range(shuffle.partitions))
    per_file = {}
    for group in range(shuffle.groups):
        per_file.update(group_duplicates(group, shuffle))
    assert sum(len(rows) for rows in per_file.values()) == found
    return [per_file[index].tolist() for index in range(len(files))]


def shard(tmp_path, name: str, pairs: list[tuple[str, str]]) -> str:
    path = str(tmp_path / f"{name}.parquet")
    urls, captions = zip(*pairs) if pairs else ((), ())
    pq.write_table(pa.table({"url": pa.array(urls, pa.string()), "caption": pa.array(captions, pa.string())}), path)
    return path


@pytest.mark.parametrize(("partitions", "group_starts"), [(2, (0,)), (2, (0, 1, 2, 3)), (64, (0, 2)), (64, (0, 3))])
def test_repeats_across_shards_are_found_after_their_first_occurrence(tmp_path, partitions, group_starts):
    a = shard(tmp_path, "a", [("u1", "c1"), ("u2", "c2"), ("u1", "c1")])
    empty = shard(tmp_path, "empty", [])
    b = shard(tmp_path, "b", [("u2", "c2"), ("u3", "c3"), ("ab", "c"), ("a", "bc")])
    c = shard(tmp_path, "c", [("u3", "c3"), ("u1", "c1"), ("u4", "c4")])
    work = str(tmp_path / "work")
    duplicates = find_global_duplicates([a, empty, b, c], work, partitions, group_starts)
    assert duplicates == [[2], [], [0], [0, 1]]


def test_the_plan_bounds_the_pairs_each_unit_holds():
    files = tuple(f"f{i}" for i in range(6))
    shuffle = PairShuffle.plan(files, [3, 4, 0, 9, 2, 2], "work", pairs_per_unit=7)
    assert [list(shuffle.group_files(g)) for g in range(shuffle.groups)] == [[0, 1, 2], [3], [4, 5]]
    assert shuffle.partitions == 4  # 20 pairs: 4 partitions of 7 hold them, 2 would not
    small = PairShuffle.plan(files, [1] * 6, "work")
    assert (small.groups, small.partitions) == (1, 2)


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
    assert find_global_duplicates(shards, str(tmp_path / "work"), partitions=8, group_starts=(0, 3)) == expected


def test_keys_separate_url_and_caption():
    hi, lo = pair_keys(["ab", "a"], ["c", "bc"])
    assert (hi[0], lo[0]) != (hi[1], lo[1])


def test_partitions_must_be_a_power_of_two(tmp_path):
    with pytest.raises(ValueError, match="power of two"):
        PairShuffle(("a",), str(tmp_path / "w"), partitions=3)
    with pytest.raises(ValueError, match="rise from 0"):
        PairShuffle(("a", "b"), str(tmp_path / "w"), group_starts=(0, 1, 1))
