"""The Ray Data runner runs the same Stage objects as the local runner and writes the same rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from laion_hf.io.atomic import read_done
from laion_hf.io.samples import MISSING_IMAGE, image_shards
from laion_hf.io.tar import iter_samples
from laion_hf.runners.base import stage_totals
from laion_hf.runners.local import LocalRunner
from laion_hf.stages.language import LanguageStage
from laion_hf.stages.removal import RemovalStage, keyword_pattern
from laion_hf.stages.score import NsfwTagStage
from laion_hf.testing.crash import CrashOnce
from tests.build_inputs import make_image_shards
from tests.damaged_shards import drop_sample

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_runner():
    from laion_hf.runners.ray import RayRunner

    runner = RayRunner(num_cpus=2, object_store_memory=150 * 1024**2, concurrency=1, batch_size=4, show_progress=False)
    runner.start()
    yield runner
    ray.shutdown()


def stages():
    return [
        RemovalStage(punsafe_threshold=0.7, keyword_regex=keyword_pattern(["number 3"]), name="removal"),
        LanguageStage(language_in=("en", "de"), name="language"),
        NsfwTagStage(unsure_at=0.2, nsfw_at=0.5),
    ]


def output(directory):
    rows, samples = [], {}
    for shard in image_shards(str(directory)):
        rows.extend(pq.read_table(shard.parquet).to_pylist())
        samples.update(dict(iter_samples(shard.tar)))
        removed = Path(shard.parquet.replace(".parquet", "_removed.parquet"))
        if removed.exists():
            rows.extend({"removed": r} for r in pq.read_table(removed).drop_columns(["image_ext"]).to_pylist())
    return rows, samples


@pytest.mark.slow
def test_ray_and_local_runners_write_the_same_rows_and_counts(tmp_path, ray_runner):
    make_image_shards(tmp_path / "in", shards=3, per_shard=7)
    shards = image_shards(str(tmp_path / "in"))
    names = [s.name for s in stages()]

    local = LocalRunner(batch_size=3, show_progress=False).map_stages(shards, stages(), str(tmp_path / "local"))
    first = ray_runner.map_stages(shards[:1], stages(), str(tmp_path / "ray"))  # as if the run stopped here
    marker = tmp_path / "ray" / ".laion-hf" / "done" / "00000.json"
    stamp = marker.stat().st_mtime_ns
    remote = ray_runner.map_stages(shards, stages(), str(tmp_path / "ray"))
    assert marker.stat().st_mtime_ns == stamp and remote["00000"] == first["00000"]  # resumed, not redone

    local_rows, local_samples = output(tmp_path / "local")
    ray_rows, ray_samples = output(tmp_path / "ray")
    assert ray_rows == local_rows
    assert ray_samples == local_samples
    kept = [r for r in local_rows if "removed" not in r]
    assert kept and all(r["language"] in ("en", "de") and r["punsafe"] <= 0.7 for r in kept)
    assert {r["NSFW"] for r in kept} == {"UNLIKELY", "UNSURE", "NSFW"}

    def counts(records):
        return [(s.stage, s.rows_in, s.kept, dict(s.dropped)) for s in stage_totals(records, names)]

    assert counts(remote) == counts(local)
    removal, language, tag = stage_totals(remote, names)
    assert removal.rows_in == 21 and removal.dropped == {"punsafe": 6, "keyword": 1}
    assert language.rows_in == removal.kept and language.dropped == {"language": 5}
    assert tag.rows_in == tag.kept == 9
    # The done markers are the local runner's format, so a run resumes across runners.
    assert read_done(str(tmp_path / "ray"), "00001") == json.loads(json.dumps(remote["00001"]))


@pytest.mark.slow
def test_a_success_row_without_its_sample_is_counted_alike_on_both_runners(tmp_path, ray_runner):
    make_image_shards(tmp_path / "in", shards=2, per_shard=5)
    drop_sample(tmp_path / "in" / "00001.tar", "000010003")
    shards = image_shards(str(tmp_path / "in"))
    names = [s.name for s in stages()]
    local = LocalRunner(batch_size=3, show_progress=False).map_stages(shards, stages(), str(tmp_path / "local"))
    remote = ray_runner.map_stages(shards, stages(), str(tmp_path / "ray"))

    def counts(records):
        return [(s.stage, s.rows_in, s.kept, dict(s.dropped)) for s in stage_totals(records, names)]

    assert counts(remote) == counts(local)
    removal = stage_totals(remote, names)[0]
    assert removal.rows_in == 10 and removal.dropped[MISSING_IMAGE] == 1
    assert output(tmp_path / "ray") == output(tmp_path / "local")


@pytest.mark.slow
def test_ray_and_local_runners_agree_on_the_demo(tmp_path, ray_runner):
    """The demo crawl built locally, then its image steps (tiny CLIP, heads, dedup, variants) again on Ray."""
    from laion_hf.build import Build, BuildOptions
    from laion_hf.demo.run import generate_crawl
    from laion_hf.recipes import load_recipe
    from laion_hf.testing.image_server import ImageServer

    with ImageServer() as server:
        crawl = generate_crawl(tmp_path / "crawl", server, files=1, pages_per_file=10)
        removals = (("url-md5", crawl.removal_list),)
        local = Build(load_recipe("demo"), BuildOptions(inputs=crawl.wat_files, output=str(tmp_path / "local"), removals=removals,
                                                        allow_private_network=True, show_progress=False)).run()
    downloaded = tmp_path / "local" / "steps" / "download"
    options = BuildOptions(inputs=[str(downloaded)], output=str(tmp_path / "ray"), start_at="filter", removals=removals,
                           runner="ray", show_progress=False)
    remote = Build(load_recipe("demo"), options, runner=ray_runner).run()

    def counts(report):
        return [(s.stage, s.rows_in, s.kept, dict(s.dropped)) for s in report.stages if s.stage not in ("extract", "download")]

    assert counts(remote) == counts(local)
    assert {s.stage for s in local.stages} >= {"clip-filter", "score", "dedup", "research-safe: removal"}
    # Same rows, same image bytes and captions; model outputs equal up to float rounding (Ray's actors run
    # torch with other thread counts, so sums are reduced in another order).
    for config in ("research", "research-safe"):
        ray_rows, ray_samples = output(tmp_path / "ray" / "steps" / "configs" / config)
        local_rows, local_samples = output(tmp_path / "local" / "steps" / "configs" / config)
        assert _approx_rows(ray_rows, local_rows)
        assert ray_samples.keys() == local_samples.keys()
        for key, members in local_samples.items():
            assert ray_samples[key]["jpg"] == members["jpg"] and ray_samples[key]["txt"] == members["txt"]
    # The filter's clip-retrieval embeddings are written by both runners, in the same order.
    for kind in ("img_emb", "text_emb"):
        files = sorted((tmp_path / "local" / "steps" / "filter+score" / kind).iterdir())
        assert files
        for f in files:
            np.testing.assert_allclose(np.load(f), np.load(tmp_path / "ray" / "steps" / "filter+score" / kind / f.name), atol=2e-3)


def _approx_rows(actual, expected):
    """Rows equal column by column; floats to 1e-5 relative."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        a, e = a.get("removed", a), e.get("removed", e)
        assert a.keys() == e.keys()
        for column, value in e.items():
            if isinstance(value, float):
                assert a[column] == pytest.approx(value, rel=1e-5, abs=1e-6), column
            else:
                assert a[column] == value, column
    return True


# ---------------------------------------------------------------- every step: Ray writes exactly what local writes


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path: bookkeeping and timed reports excluded, and the
    README's title (the folder's name) and options naming the output folder made neutral."""
    skip = ("download_report.json", "extract_stats.json", "dedup_report.json", "_global_dedup.done.json")
    return {
        str(p.relative_to(directory)): p.read_bytes().replace(str(directory).encode(), b"OUT").replace(
            f"# {directory.name}\n".encode(), b"# OUT\n")
        for p in sorted(directory.rglob("*"))
        if p.is_file() and ".laion-hf" not in p.parts and p.name not in skip
    }


@pytest.fixture(scope="module")
def crawl_steps(tmp_path_factory):
    """The demo crawl's extract and download outputs, written by the local runner (the reference)."""
    from laion_hf.demo.run import generate_crawl
    from laion_hf.runners.local import LocalRunner
    from laion_hf.steps.download import download
    from laion_hf.steps.extract import extract
    from laion_hf.testing.image_server import ImageServer

    root = tmp_path_factory.mktemp("crawl-steps")
    server = ImageServer().__enter__()
    crawl = generate_crawl(root / "crawl", server, files=2, pages_per_file=4)
    local = LocalRunner(workers=2, show_progress=False)
    extract(crawl.wat_files, str(root / "extract"), runner=local)
    download(str(root / "extract"), str(root / "download"), allow_private_network=True, rows_per_shard=16, runner=local)
    yield root, crawl, server
    server.__exit__(None, None, None)


@pytest.mark.slow
def test_extract_on_ray_writes_the_local_runners_shards(crawl_steps, ray_runner, tmp_path):
    from laion_hf.steps.extract import extract

    root, crawl, _ = crawl_steps
    report = extract(crawl.wat_files, str(tmp_path / "ray"), runner=ray_runner)
    assert files_of(tmp_path / "ray") == files_of(root / "extract")
    assert report.total.rows_in == report.total.kept + report.total.removed > 0
    assert report.total.dropped["duplicate_global"] > 0  # the shuffle's three maps ran on Ray and found some


@pytest.mark.slow
def test_download_on_ray_writes_the_local_runners_shards(crawl_steps, ray_runner, tmp_path):
    from laion_hf.steps.download import download

    root, _, _ = crawl_steps
    report = download(str(root / "extract"), str(tmp_path / "ray"), allow_private_network=True, rows_per_shard=16,
                      runner=ray_runner)
    assert files_of(tmp_path / "ray") == files_of(root / "download")
    assert report.rows_in == report.kept + report.removed > 0


@pytest.mark.slow
def test_dedup_on_ray_writes_the_local_runners_shards(ray_runner, tmp_path, monkeypatch):
    """Its decision cut into many units (groups, hash, value and band partitions), each a Ray task."""
    from laion_hf.steps import dedup_decision
    from laion_hf.steps.dedup import dedup_shards

    monkeypatch.setattr(dedup_decision, "ROWS_PER_UNIT", 5)
    make_image_shards(tmp_path / "in", shards=3, per_shard=8, duplicate_every=3, same_image_every=5)
    local = dedup_shards(str(tmp_path / "in"), str(tmp_path / "local"), show_progress=False)
    remote = dedup_shards(str(tmp_path / "in"), str(tmp_path / "ray"), runner=ray_runner)
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "local")
    assert remote.stats.to_dict() | {"seconds": 0} == local.stats.to_dict() | {"seconds": 0}
    assert remote.stats.removed > 0


@pytest.mark.slow
def test_filter_and_score_on_ray_write_the_local_runners_rows(ray_runner, tmp_path):
    from laion_hf.steps.filter import filter_shards
    from laion_hf.steps.score import score_shards
    from laion_hf.testing.synthetic.shards import write_shards

    write_shards(str(tmp_path / "in"), shards=2, per_shard=6, seed=5)
    tiny = {"nsfw": "tiny", "watermark": "tiny", "aesthetic": "tiny", "clip": "laion-hf-tiny"}
    for name, runner in (("local", None), ("ray", ray_runner)):
        filter_shards(str(tmp_path / "in"), str(tmp_path / name / "filtered"), model="laion-hf-tiny", batch_size=4,
                      show_progress=False, runner=runner)
        score_shards(str(tmp_path / name / "filtered"), str(tmp_path / name / "scored"), **tiny, show_progress=False,
                     runner=runner)
    for step in ("filtered", "scored"):
        ray_rows, ray_samples = output(tmp_path / "ray" / step)
        local_rows, local_samples = output(tmp_path / "local" / step)
        assert _approx_rows(ray_rows, local_rows)  # model outputs to float rounding (torch thread counts differ)
        assert ray_samples.keys() == local_samples.keys() and ray_samples
        for key, members in local_samples.items():
            assert ray_samples[key]["jpg"] == members["jpg"] and ray_samples[key]["txt"] == members["txt"]
    assert (tmp_path / "ray" / "filtered" / "embedding_model.json").read_text() == \
        (tmp_path / "local" / "filtered" / "embedding_model.json").read_text()


@pytest.mark.slow
def test_a_ray_worker_killed_mid_step_is_replaced_and_the_output_is_the_local_one(ray_runner, tmp_path):
    make_image_shards(tmp_path / "in", shards=3, per_shard=5)
    shards = image_shards(str(tmp_path / "in"))
    marker = tmp_path / "killed"
    remote = ray_runner.map_stages(shards, [CrashOnce(str(marker), "000010000"), *stages()], str(tmp_path / "ray"))
    assert marker.exists()  # the worker did die once
    local = LocalRunner(batch_size=3, show_progress=False).map_stages(
        shards, [CrashOnce(str(marker), "000010000"), *stages()], str(tmp_path / "local"))
    assert output(tmp_path / "ray") == output(tmp_path / "local")
    names = ["crash-once", *(s.name for s in stages())]
    assert [s.to_dict() | {"seconds": 0} for s in stage_totals(remote, names)] == \
        [s.to_dict() | {"seconds": 0} for s in stage_totals(local, names)]


@pytest.mark.slow
def test_the_dedup_command_runs_on_ray_with_the_local_commands_output(ray_runner, tmp_path, monkeypatch, capsys):
    """``laion-hf dedup --runner ray``: the single-step command through the same step and runner as a build."""
    import sys

    from laion_hf.cli import main
    from laion_hf.runners.ray import RayRunner

    mapped = []
    original = RayRunner.map
    monkeypatch.setattr(RayRunner, "map", lambda self, units, *a, **k: mapped.append(len(units)) or original(self, units, *a, **k))
    make_image_shards(tmp_path / "in", shards=2, per_shard=6, duplicate_every=3)
    for name, extra in (("local", []), ("ray", ["--runner", "ray"])):
        monkeypatch.setattr(sys, "argv", ["laion-hf", "dedup", str(tmp_path / "in"), str(tmp_path / name), *extra])
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == 0, capsys.readouterr().err
    # Signatures and marks: one Ray task per shard; between them the decision's maps (number, exact, the pHash
    # pass's bands, pairs, walk, keepers and apply, the decisions), one unit each at this size. Local used no Ray.
    assert mapped == [2, 1, 1, 1, 1, 1, 1, 1, 1, 2]
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "local")


@pytest.mark.slow
def test_passes_share_the_ray_workers_and_set_their_stages_up_once_per_worker(ray_runner, tmp_path):
    """The worker processes outlive a pass (started, torch imported, once per run), and a pass's stages are set up
    once per worker, not once per shard."""
    from laion_hf.core.stage import Stage

    class RecordSetup(Stage):  # defined here, so Ray ships it by value
        name = "record-setup"

        def __init__(self, log: str) -> None:
            self.log = log

        def setup(self) -> None:
            import os

            with open(self.log, "a") as f:
                f.write(f"{os.getpid()}\n")

        def __call__(self, batch):
            return batch

    make_image_shards(tmp_path / "in", shards=3, per_shard=4)
    shards = image_shards(str(tmp_path / "in"))
    log = tmp_path / "setups"
    for name in ("first", "second"):
        ray_runner.map_stages(shards, [RecordSetup(str(log))], str(tmp_path / name))
    pids = log.read_text().split()
    assert len(pids) == 2 and pids[0] == pids[1]  # one worker (concurrency=1): one set-up per pass, same process
    assert output(tmp_path / "second") == output(tmp_path / "first")


@pytest.mark.slow
def test_a_second_ray_runner_in_the_process_does_not_wait_for_the_first_ones_idle_workers(ray_runner, tmp_path):
    """Ray started with 2 CPUs: the fixture's runner keeps a worker (1 CPU) after its pass; a runner with 2 workers
    must still get both CPUs (the process has one pool, which the second runner replaces), not wait forever."""
    import functools
    import threading

    from laion_hf.runners.ray import RayRunner

    process = functools.partial(dict.fromkeys, ["unit"])
    assert ray_runner.map(["a", "b"], process, output_dir=str(tmp_path / "first")) == {"a": {"unit": "a"}, "b": {"unit": "b"}}
    second, results = RayRunner(concurrency=2, show_progress=False), []
    thread = threading.Thread(target=lambda: results.append(second.map(["c", "d"], process, output_dir=str(tmp_path / "second"))),
                              daemon=True)
    thread.start()
    thread.join(timeout=180)
    assert results == [{"c": {"unit": "c"}, "d": {"unit": "d"}}]
