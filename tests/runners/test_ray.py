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
