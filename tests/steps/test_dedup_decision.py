"""The dedup decision as a shuffle: every cut of a run into units decides what the rule, applied one row at a
time, decides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_hf.runners.local import LocalRunner
from laion_hf.stages.duplicates import (
    DUPLICATE_HASH,
    DUPLICATE_OF,
    EMBEDDING_SIMHASH,
    NEAR_DUPLICATE_EMBEDDING,
    NEAR_DUPLICATE_PHASH,
    band_count,
)
from laion_hf.steps import dedup_decision
from laion_hf.steps.dedup_decision import DecisionPlan


def decide(run: Path, signatures: pa.Table, max_distance: int | None = 4,
           max_embedding_distance: int | None = None, rows_per_unit: int | None = None) -> list[tuple]:
    """Write ``signatures`` as one file per shard into ``run``, run the plan's maps in this process (resuming
    what ``run`` holds), and return the decisions as (shard, key, duplicate_of, reason) in (shard, key) order."""
    (run / "signatures").mkdir(parents=True, exist_ok=True)
    shards = sorted(set(signatures["shard"].to_pylist()))
    files, rows = [], []
    for shard in shards:
        part = signatures.filter(pa.compute.equal(signatures["shard"], shard))
        files.append(str(run / "signatures" / f"{shard}.parquet"))
        rows.append(part.num_rows)
        pq.write_table(part, files[-1])
    plan = DecisionPlan.plan(files, rows, str(run / "work"), max_distance=max_distance,
                             max_embedding_distance=max_embedding_distance, rows_per_unit=rows_per_unit)
    dedup_decision.decide(plan, str(run / "decisions"), LocalRunner(show_progress=False))
    return [(shard, r["key"], r[DUPLICATE_OF], r["reason"])
            for shard in shards for r in pq.read_table(run / "decisions" / f"{shard}.parquet").to_pylist()]


SCHEMA = pa.schema([("shard", pa.string()), ("key", pa.string()), ("hash", pa.int64()), ("phash", pa.int64())])


def test_the_first_row_by_shard_then_key_is_kept_and_null_hashes_match_nothing(tmp_path):
    signatures = pa.table({
        "shard": ["00001", "00000", "00000", "00002"],
        "key": ["10", "02", "01", "20"],
        "hash": [7, 7, None, None],
        "phash": [None, None, None, None],
    }, schema=SCHEMA)
    assert decide(tmp_path, signatures) == [("00001", "10", "02", DUPLICATE_HASH)]


def test_near_duplicates_respect_the_distance(tmp_path):
    base = 0x0F0F_0F0F_0F0F_0F0F
    within, beyond = base ^ 0b1111, base ^ 0b11111  # 4 and 5 bits away
    signatures = pa.table({"shard": ["0", "0", "0"], "key": ["a", "b", "c"], "hash": [1, 2, 3],
                           "phash": [base, within, beyond]}, schema=SCHEMA)
    assert decide(tmp_path, signatures, max_distance=4) == [("0", "b", "a", NEAR_DUPLICATE_PHASH)]


def one_row_at_a_time(table: pa.Table, max_distance: int | None, max_embedding_distance: int | None) -> list[tuple]:
    """The rule as written, O(n^2): rows in (shard, key) order, each a near-duplicate of the earliest kept row."""
    rows = sorted(table.to_pylist(), key=lambda r: (r["shard"], r["key"]))
    keeper: dict[int, int] = {}
    reason: dict[int, str] = {}
    first_of_hash: dict[int, int] = {}
    for i, row in enumerate(rows):
        if row["hash"] is not None:
            if row["hash"] in first_of_hash:
                keeper[i], reason[i] = first_of_hash[row["hash"]], DUPLICATE_HASH
            else:
                first_of_hash[row["hash"]] = i
    passes = []
    if max_distance is not None:
        passes.append(("phash", max_distance, NEAR_DUPLICATE_PHASH))
    if max_embedding_distance is not None:
        passes.append((EMBEDDING_SIMHASH, max_embedding_distance, NEAR_DUPLICATE_EMBEDDING))
    for column, limit, label in passes:
        kept: list[int] = []
        for i, row in enumerate(rows):
            if i in reason or row[column] is None:
                continue
            close = (k for k in kept if ((rows[k][column] ^ row[column]) & (2**64 - 1)).bit_count() <= limit)
            match = next(close, None)
            if match is None:
                kept.append(i)
            else:
                keeper[i], reason[i] = match, label
    final = {}
    for i in reason:
        final[i] = keeper[i]
        while final[i] in reason:
            final[i] = keeper[final[i]]
    return [(rows[i]["shard"], rows[i]["key"], rows[final[i]]["key"], reason[i]) for i in sorted(reason)]


def clustered_signatures(rows: int, seed: int) -> pa.Table:
    """Hashes near a few shared bases (0-7 bits flipped: identical values, chains, far ones), repeated LAION
    hashes, some nulls, and rows spread over shards out of order."""
    rng = np.random.default_rng(seed)
    bases = [int(v) for v in rng.integers(0, 2**63, max(1, rows // 8), dtype=np.int64)]

    def near(base: int) -> int:
        for bit in rng.choice(64, int(rng.integers(0, 8)), replace=False):
            base ^= 1 << int(bit)
        return base - (1 << 64) if base >= 1 << 63 else base

    def maybe(value):
        return None if rng.random() < 0.05 else value

    return pa.table({
        "shard": [f"{s:03d}" for s in rng.integers(0, 5, rows)],
        "key": [f"k{i:05d}" for i in range(rows)],
        "hash": pa.array([maybe(int(h)) for h in rng.integers(0, rows // 2, rows)], pa.int64()),
        "phash": pa.array([maybe(near(bases[int(b)])) for b in rng.integers(0, len(bases), rows)], pa.int64()),
        EMBEDDING_SIMHASH: pa.array([maybe(near(bases[int(b)])) for b in rng.integers(0, len(bases), rows)],
                                    pa.int64()),
    })


@pytest.mark.parametrize("extra_bands", [0, 1, 3])
@pytest.mark.parametrize(("max_distance", "max_embedding_distance"), [(4, None), (0, None), (2, 5), (6, 1)])
def test_the_decision_equals_the_rule_applied_one_row_at_a_time(tmp_path, monkeypatch, extra_bands, max_distance,
                                                                max_embedding_distance):
    """Whatever number of bands the index uses, no pair within the distance is missed and keepers are the same."""
    monkeypatch.setattr(dedup_decision, "band_count", lambda distance, values: distance + 1 + extra_bands)
    for seed in range(3):
        table = clustered_signatures(400, seed)
        expected = one_row_at_a_time(table, max_distance, max_embedding_distance)
        assert decide(tmp_path / str(seed), table, max_distance, max_embedding_distance) == expected
        assert {r[3] for r in expected} >= {DUPLICATE_HASH, NEAR_DUPLICATE_PHASH}


@pytest.mark.parametrize("rows_per_unit", [60, 150, 1000])
@pytest.mark.parametrize(("max_distance", "max_embedding_distance"), [(4, None), (3, 5), (None, 2), (None, None)])
def test_every_cut_into_groups_and_partitions_decides_the_same(tmp_path, rows_per_unit, max_distance,
                                                               max_embedding_distance):
    """Rows, values and pairs cross unit boundaries: a keeper in another partition, a follower of a row that a
    later pass removes (its chain), and the walk's keepers all still meet."""
    table = clustered_signatures(600, seed=11)
    plan = DecisionPlan.plan(["a"] * 5, [120] * 5, "", max_distance=max_distance,
                             max_embedding_distance=max_embedding_distance, rows_per_unit=rows_per_unit)
    if rows_per_unit < 1000:
        assert plan.groups > 1 and plan.partitions > 1
    expected = one_row_at_a_time(table, max_distance, max_embedding_distance)
    assert decide(tmp_path, table, max_distance, max_embedding_distance, rows_per_unit) == expected
    assert len(expected) > 100


def test_the_plan_bounds_every_unit_however_big_the_run():
    rows = [1_000_000] * 6_000  # 6B rows in 6,000 shards
    plan = DecisionPlan.plan([f"{i:05d}" for i in range(len(rows))], rows, "", max_distance=4)
    assert plan.passes[0].bands == band_count(4, sum(rows))
    per_group = [sum(rows[i] for i in plan.group_files(g)) for g in range(plan.groups)]
    assert max(per_group) <= dedup_decision.ROWS_PER_UNIT
    assert sum(rows) / plan.partitions <= dedup_decision.ROWS_PER_UNIT
    records = sum(rows) * plan.passes[0].combinations
    budget = dedup_decision.RECORDS_PER_ROW * dedup_decision.ROWS_PER_UNIT
    assert records / plan.band_partitions <= budget
    assert records / plan.partitions <= budget  # a value partition's band records


def test_an_image_repeated_many_times_costs_one_value(tmp_path):
    phash = pa.array([5] * 50_000 + [5 ^ 0b11], pa.int64())
    signatures = pa.table({"shard": ["0"] * len(phash), "key": [f"{i:06d}" for i in range(len(phash))],
                           "hash": pa.array(range(len(phash)), pa.int64()), "phash": phash}, schema=SCHEMA)
    removed = decide(tmp_path, signatures, max_distance=4)
    assert len(removed) == len(phash) - 1
    assert {r[2] for r in removed} == {"000000"}


def test_a_failed_unit_resumes_without_redoing_finished_ones(tmp_path, monkeypatch):
    table = clustered_signatures(300, seed=5)
    expected = decide(tmp_path / "uninterrupted", table, 4, 3, rows_per_unit=40)

    real_apply, real_number = dedup_decision.apply, dedup_decision.number_rows
    calls = {"apply": 0, "number": 0}

    def failing_apply(partition, plan, near_pass):
        calls["apply"] += 1
        if near_pass == 1 and calls["apply"] > plan.partitions + 2:
            raise OSError("disk gone")
        return real_apply(partition, plan, near_pass)

    def counting_number(group, plan):
        calls["number"] += 1
        return real_number(group, plan)

    monkeypatch.setattr(dedup_decision, "apply", failing_apply)
    monkeypatch.setattr(dedup_decision, "number_rows", counting_number)
    run = tmp_path / "resumed"
    with pytest.raises(OSError, match="disk gone"):
        decide(run, table, 4, 3, rows_per_unit=40)
    numbered = calls["number"]
    monkeypatch.setattr(dedup_decision, "apply", real_apply)
    assert decide(run, table, 4, 3, rows_per_unit=40) == expected
    assert calls["number"] == numbered  # the finished maps were not run again
