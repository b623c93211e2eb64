"""The local runner: resumes from done markers, reports finished units' stats, surfaces errors, and keeps its
spawned worker processes across passes (while the environment they were spawned in is unchanged)."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from laion_hf.io.atomic import read_done
from laion_hf.io.samples import image_shards
from laion_hf.runners.local import LocalRunner, shutdown_pools
from laion_hf.stages.removal import RemovalStage, keyword_pattern
from laion_hf.testing.crash import CrashOnce
from laion_hf.testing.workers import RecordWorker, worker_record
from tests.build_inputs import make_image_shards

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


# ---------------------------------------------------------------- the kept pool of worker processes


@pytest.fixture(autouse=True)
def no_kept_workers_after_a_test():
    yield
    shutdown_pools()


def recording(tmp_path: Path, name: str):
    """A unit that records its worker once both workers of the pool have run one (so both take part)."""
    return functools.partial(worker_record, rendezvous=str(tmp_path / f"{name}-met"), workers=2, variable="LAION_HF_PROBE")


def pids_of(records: dict) -> set[int]:
    return {record["pid"] for record in records.values()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_passes_of_any_runner_share_the_kept_worker_processes(tmp_path):
    """Two passes, two runners: the same two spawned workers run both (spawned once, not once per pass), and no
    other worker process is left in this process."""
    first, second = (
        pids_of(LocalRunner(workers=2, show_progress=False).map(["a", "b", "c", "d"], recording(tmp_path, name),
                                                                output_dir=str(tmp_path / name)))
        for name in ("first", "second")
    )
    assert len(first) == 2 and os.getpid() not in first
    assert second == first
    assert {child.pid for child in multiprocessing.active_children()} == first


def test_shutdown_ends_the_kept_workers(tmp_path):
    pids = pids_of(LocalRunner(workers=2, show_progress=False).map(["a", "b"], recording(tmp_path, "pass"),
                                                                   output_dir=str(tmp_path / "out")))
    assert len(pids) == 2 and all(alive(pid) for pid in pids)  # kept for the next pass
    shutdown_pools()
    assert not any(alive(pid) for pid in pids)
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("change", ["variable", "sys.path"])
def test_a_pass_after_the_environment_changed_runs_on_new_workers_that_see_it(tmp_path, monkeypatch, change):
    """Kept workers would still see the environment they were spawned in: a changed variable (an offline flag,
    a data path) or ``sys.path`` ends the kept pool, and the next pass's new workers see the change."""
    runner = LocalRunner(workers=2, show_progress=False)
    seen = {}
    for value in ("first", "second"):
        if change == "variable":
            monkeypatch.setenv("LAION_HF_PROBE", value)
        else:
            monkeypatch.syspath_prepend(str(tmp_path / value))
        seen[value] = runner.map(["a", "b", "c"], recording(tmp_path, value), output_dir=str(tmp_path / value))
    field, expected = ("variable", "{}") if change == "variable" else ("path", str(tmp_path / "{}"))
    for value, records in seen.items():
        assert {record[field] for record in records.values()} == {expected.format(value)}
    assert len(pids_of(seen["first"])) == 2 and not pids_of(seen["first"]) & pids_of(seen["second"])
    assert not any(alive(pid) for pid in pids_of(seen["first"]))  # the old pool was ended, not left running


def test_a_pass_sets_its_stages_up_once_per_worker_and_the_next_pass_lets_them_go_first(tmp_path, monkeypatch):
    """4 shards on 2 workers: one set-up per worker, not one per shard; a worker meeting the next pass releases
    the previous pass's stages (their models) before setting the new ones up. The file that carried a pass's
    stages to the workers is gone after the pass."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    make_image_shards(tmp_path / "in", shards=4, per_shard=3)
    shards = image_shards(str(tmp_path / "in"))
    log = tmp_path / "log"
    runner = LocalRunner(workers=2, show_progress=False)
    for tag in ("first", "second"):
        stage = RecordWorker(str(log), tag, rendezvous=str(tmp_path / f"{tag}-met"))
        assert list(runner.map_stages(shards, [stage], str(tmp_path / tag))) == ["00000", "00001", "00002", "00003"]
    events = [line.split() for line in log.read_text().splitlines()]
    pids = {pid for _, _, pid in events}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    for pid in pids:
        assert [f"{what} {tag}" for what, tag, p in events if p == pid and what != "call"] == \
            ["setup first", "release first", "setup second"]
    assert Counter(tag for what, tag, _ in events if what == "call") == {"first": 4, "second": 4}  # one batch a shard
    assert not list((tmp_path / "tmp").iterdir())


def test_a_kept_worker_that_died_between_passes_does_not_fail_the_next_pass(tmp_path):
    """An idle worker killed (SIGKILL, the out-of-memory killer) breaks the kept pool: the next pass runs on a new one."""
    runner = LocalRunner(workers=2, show_progress=False)
    first = pids_of(runner.map(["a", "b"], recording(tmp_path, "first"), output_dir=str(tmp_path / "first")))
    os.kill(min(first), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in first) and time.monotonic() < deadline:  # the broken pool ends the other one
        time.sleep(0.05)
    second = runner.map(["a", "b"], recording(tmp_path, "second"), output_dir=str(tmp_path / "second"))
    assert sorted(second) == ["a", "b"] and len(pids_of(second)) == 2 and not pids_of(second) & first


def data_files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and ".laion-hf" not in p.parts}


def test_a_worker_killed_mid_pass_fails_the_pass_and_a_rerun_on_new_workers_writes_the_same_output(tmp_path):
    """A real SIGKILL: the pass raises, saying so; later passes get new workers; the rerun writes what a run that
    was never killed writes."""
    make_image_shards(tmp_path / "in", shards=3, per_shard=5)
    shards = image_shards(str(tmp_path / "in"))
    marker = tmp_path / "killed"

    def stages():
        return [CrashOnce(str(marker), "000010000"),
                RemovalStage(punsafe_threshold=0.7, keyword_regex=keyword_pattern(["number 3"]), name="removal")]

    output = tmp_path / "pool" / "out"
    runner = LocalRunner(workers=2, batch_size=3, show_progress=False)
    with pytest.raises(BrokenProcessPool, match=r"crash-once, removal: a worker process died .* run again to resume"):
        runner.map_stages(shards, stages(), str(output))
    assert marker.exists() and read_done(str(output), "00001") is None  # the killed shard is not marked done
    later = runner.map(["a", "b"], recording(tmp_path, "later"), output_dir=str(tmp_path / "later"))
    assert len(pids_of(later)) == 2  # a later pass runs on a new pool, not the broken one
    rerun = runner.map_stages(shards, stages(), str(output))
    reference = LocalRunner(batch_size=3, show_progress=False).map_stages(shards, stages(), str(tmp_path / "here" / "out"))
    assert data_files(output) == data_files(tmp_path / "here" / "out")

    def counts(records):
        return [[{**stage, "seconds": 0} for stage in record["stages"]] for record in records.values()]

    assert counts(rerun) == counts(reference)
    assert sum(stage["rows_in"] for record in rerun.values() for stage in record["stages"][1:]) == 15
