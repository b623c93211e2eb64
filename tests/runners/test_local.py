"""The local runner: resumes from done markers, reports finished shards' stats, surfaces errors."""

from __future__ import annotations

import pytest

from laion_hf.io.atomic import read_done
from laion_hf.runners.local import run_shards

CALLS: list[str] = []


def process(name: str) -> dict:
    CALLS.append(name)
    if name == "bad":
        raise ValueError("bad shard")
    return {"rows": len(name)}


def test_skips_finished_shards_and_reuses_their_stats(tmp_path):
    CALLS.clear()
    out = str(tmp_path)
    first = run_shards(["a", "bb"], process, output_dir=out, name_of=str, show_progress=False)
    assert first == {"a": {"rows": 1}, "bb": {"rows": 2}}
    second = run_shards(["a", "bb", "ccc"], process, output_dir=out, name_of=str, show_progress=False)
    assert CALLS == ["a", "bb", "ccc"]
    assert second == {"a": {"rows": 1}, "bb": {"rows": 2}, "ccc": {"rows": 3}}


def test_failed_shard_gets_no_marker_and_others_finish(tmp_path):
    with pytest.raises(ValueError, match="bad shard"):
        run_shards(["a", "bad", "ccc"], process, output_dir=str(tmp_path), name_of=str, workers=2, show_progress=False)
    assert read_done(str(tmp_path), "bad") is None
    assert read_done(str(tmp_path), "a") == {"rows": 1}
    assert read_done(str(tmp_path), "ccc") == {"rows": 3}
