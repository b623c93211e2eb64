"""``extract`` killed with SIGKILL during the cross-file dedup: a resumed run leaves nothing behind.

The run is a real subprocess that sends itself SIGKILL at a chosen point of the
dedup phase (after a reduce unit wrote its duplicates but before its done
marker, or while a final shard is half-written), so the kill lands there every
time, not by timing. The resumed run redoes only the unfinished units.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from laion_hf.extract.extract import SCRATCH_DIR
from laion_hf.steps.extract import extract
from laion_hf.testing.wat import Image, Page, write_wat

#: Where the child kills itself: the name of a function it wraps, and the module that holds it.
KILL_POINTS = {
    "reduce-unit-written": ("laion_hf.steps.extract", "find_duplicates"),
    "final-shard-half-written": ("pyarrow.parquet", "write_table"),
}

CHILD = """
import importlib, os, signal, sys
module_name, function_name, inputs, output = sys.argv[1], sys.argv[2], sys.argv[3:-1], sys.argv[-1]
module = importlib.import_module(module_name)
original = getattr(module, function_name)

def kill_after(*args, **kwargs):
    original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(module, function_name, kill_after)
from laion_hf.steps.extract import extract
extract(inputs, output, detect_language=False, show_progress=False)
"""


def _inputs(tmp_path) -> list[str]:
    shared = Image("https://cdn.example/shared.jpg", "the same picture on every site")
    paths = []
    for site in range(3):
        images = [shared] + [Image(f"https://cdn.example/{site}-{i}.jpg", f"picture {i} of site {site}") for i in range(20)]
        path = tmp_path / "in" / f"site{site}.warc.wat.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.append(write_wat(str(path), [Page(url=f"https://site{site}.example/", images=images)]))
    return paths


def _leftovers(directory) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), directory)
        for root, dirs, files in os.walk(directory)
        for name in files + dirs
        if name.endswith(".tmp") or name == SCRATCH_DIR or name.startswith("laion-hf-dedup-")
    )


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_killed_in_the_dedup_phase_resumes_and_leaves_nothing_behind(tmp_path, point, monkeypatch):
    inputs = _inputs(tmp_path)
    output, system_tmp = tmp_path / "out", tmp_path / "system-tmp"
    system_tmp.mkdir()
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), *KILL_POINTS[point], *inputs, str(output)],
        env={**os.environ, "TMPDIR": str(system_tmp)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    left = _leftovers(output)
    if point == "reduce-unit-written":
        assert left == [SCRATCH_DIR]
    else:
        scratch, half_written = left
        assert scratch == SCRATCH_DIR
        assert half_written.startswith("site0.warc.wat.parquet.") and half_written.endswith(".tmp")
    assert os.listdir(system_tmp) == []  # scratch lives under OUTPUT, never in the system temp dir

    def already_done(*args, **kwargs):
        raise AssertionError("a finished keys unit was redone")

    monkeypatch.setattr("laion_hf.steps.extract.write_keys", already_done)  # every group's keys were written
    resumed = extract(inputs, str(output), detect_language=False, show_progress=False)
    monkeypatch.undo()
    assert _leftovers(output) == []
    uninterrupted = extract(inputs, str(tmp_path / "uninterrupted"), detect_language=False, show_progress=False)
    assert [pq.read_table(s).to_pylist() for s in resumed.shards] == [
        pq.read_table(s).to_pylist() for s in uninterrupted.shards
    ]
    assert resumed.total.to_dict() | {"seconds": 0} == uninterrupted.total.to_dict() | {"seconds": 0}
    assert resumed.total.dropped["duplicate_global"] == 2
