"""Drop marking: first reason wins, nulls never drop, counts add up or fail loudly."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from laion_hf.core.stage import StageStats, count_reasons, mark_dropped, split_kept


def test_first_reason_wins_and_null_mask_keeps():
    batch = pa.table({"x": [1, 2, 3, 4]})
    batch = mark_dropped(batch, pa.array([True, False, None, False]), "a")
    batch = mark_dropped(batch, pa.array([True, True, True, False]), "b")
    assert batch["drop_reason"].to_pylist() == ["a", "b", "b", None]
    kept, removed = split_kept(batch)
    assert kept.column_names == ["x"] and kept["x"].to_pylist() == [4]
    assert count_reasons(removed) == Counter({"b": 2, "a": 1})


def test_stats_check_catches_lost_rows():
    stats = StageStats("s", rows_in=10, kept=7, dropped=Counter({"a": 2}))
    with pytest.raises(AssertionError, match="10 in != 7 kept"):
        stats.check()
    stats.dropped["b"] += 1
    stats.check()
    assert StageStats.from_dict(stats.to_dict()) == stats
