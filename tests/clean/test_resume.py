"""kill -9 in the middle of a real `laion-hf clean` process, twice; the resumed output equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from laion_hf.demo.sample_copy import generate_sample_copy

SHARDS = 40


def clean_command(copy, out: Path) -> list[str]:
    lists = dict(copy.removal)
    return [
        sys.executable, "-c", "from laion_hf.cli import main; main()", "clean",
        str(copy.download_dir), str(out),
        "--remove", f"url-sha256={lists['url-sha256']}", "--remove", f"image-sha256={lists['image-sha256']}",
        "--variant", "research", "--metadata", str(copy.metadata_dir), "--keyword-file", str(copy.keyword_file),
        "--workers", "2", "--batch-size", "1",  # tiny batches: slow enough to be killed mid-run
    ]


def kill_when_done(command: list[str], out: Path, done_shards: int) -> int:
    """Start the command in its own process group; SIGKILL the group once ``done_shards`` markers exist."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and len(list(out.glob(".laion-hf/done/*.json"))) >= done_shards:
            os.killpg(process.pid, signal.SIGKILL)  # the whole group: pool workers die too, like a crash
            break
        time.sleep(0.002)
    process.wait()
    return len(list(out.glob(".laion-hf/done/*.json")))


def comparable_report(out: Path) -> dict:
    report = json.loads((out / "clean_report.json").read_text())
    for shard in [report["total"], *report["shards"]]:
        shard.pop("seconds")
    report.pop("output")
    return report


@pytest.mark.slow
def test_kill_9_twice_then_resume_equals_an_uninterrupted_run(tmp_path):
    copy = generate_sample_copy(tmp_path / "copy", rows_per_shard=1000, download_shards=SHARDS)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    subprocess.run(clean_command(copy, reference), check=True, capture_output=True)

    first = kill_when_done(clean_command(copy, resumed), resumed, done_shards=3)
    assert 3 <= first < SHARDS, "the run was not killed mid-way"
    second = kill_when_done(clean_command(copy, resumed), resumed, done_shards=first + 10)
    assert first < second < SHARDS, "the resumed run was not killed mid-way"
    result = subprocess.run(clean_command(copy, resumed), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    expected = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in resumed.iterdir()) == expected  # no temporaries left behind
    for name in expected:
        if name.endswith((".parquet", ".tar", "_stats.json")):
            assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name
    assert comparable_report(resumed) == comparable_report(reference)
