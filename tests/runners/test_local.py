"""The local runner: resumes from done markers, reports finished units' stats, surfaces errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from laion_hf.io.atomic import read_done
from laion_hf.runners.local import LocalRunner

CALLS: list[str] = []


def process(name: str) -> dict:
    CALLS.append(name)
    if name == "bad":
        raise ValueError("bad shard")
    return {"rows": len(name)}


def test_skips_finished_shards_and_reuses_their_stats(tmp_path):
    CALLS.clear()
    out = str(tmp_path)
    runner = LocalRunner(show_progress=False)
    first = runner.map(["a", "bb"], process, output_dir=out)
    assert first == {"a": {"rows": 1}, "bb": {"rows": 2}}
    second = runner.map(["a", "bb", "ccc"], process, output_dir=out)
    assert CALLS == ["a", "bb", "ccc"]
    assert second == {"a": {"rows": 1}, "bb": {"rows": 2}, "ccc": {"rows": 3}}


def test_failed_shard_gets_no_marker_and_others_finish(tmp_path):
    """Workers are fresh interpreters, so the work is a library function: json.loads fails on the bad shard."""
    shards = {"a": '{"rows": 1}', "bad": "not json", "ccc": '{"rows": 3}'}
    name_of = {text: name for name, text in shards.items()}.get
    with pytest.raises(ValueError, match="Expecting value"):
        LocalRunner(workers=2, show_progress=False).map(list(shards.values()), json.loads, output_dir=str(tmp_path),
                                                        name_of=name_of)
    assert read_done(str(tmp_path), "bad") is None
    assert read_done(str(tmp_path), "a") == {"rows": 1}
    assert read_done(str(tmp_path), "ccc") == {"rows": 3}


@pytest.mark.slow
def test_workers_do_not_hang_after_this_process_ran_a_model(tmp_path):
    """filter (torch in this process) then score with 2 workers: forked workers inherited torch's OpenMP locks and hung."""
    script = textwrap.dedent(f"""
        from laion_hf.testing.synthetic.shards import write_shards
        from laion_hf.steps.filter import filter_shards
        from laion_hf.steps.score import score_shards
        write_shards({str(tmp_path / "in")!r}, shards=2, per_shard=4, seed=3)
        filter_shards({str(tmp_path / "in")!r}, {str(tmp_path / "filtered")!r}, model="laion-hf-tiny", batch_size=4, show_progress=False)
        report = score_shards({str(tmp_path / "filtered")!r}, {str(tmp_path / "scored")!r}, nsfw="tiny", watermark="tiny", aesthetic="tiny", clip="laion-hf-tiny", workers=2, show_progress=False)
        print("scored", report["shards"], "shards")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "scored 2 shards" in done.stdout
