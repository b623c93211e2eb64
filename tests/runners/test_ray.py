"""The Ray Data runner runs the same Stage objects as the local runner and writes the same rows."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.build_inputs import make_image_shards
from laion_hf.build import LocalRunner, image_shards, merge_shard_records
from laion_hf.clean.removal import RemovalStage, keyword_pattern
from laion_hf.io.atomic import read_done
from laion_hf.io.tar import iter_samples
from laion_hf.recipes.stages import LanguageStage, NsfwTagStage

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_runner():
    from laion_hf.runners.ray import RayRunner

    runner = RayRunner(num_cpus=2, object_store_memory=150 * 1024**2, concurrency=1, batch_size=4)
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

    local = LocalRunner(batch_size=3, show_progress=False).run_stages(shards, stages(), str(tmp_path / "local"))
    remote = ray_runner.run_stages(shards, stages(), str(tmp_path / "ray"))

    local_rows, local_samples = output(tmp_path / "local")
    ray_rows, ray_samples = output(tmp_path / "ray")
    assert ray_rows == local_rows
    assert ray_samples == local_samples
    kept = [r for r in local_rows if "removed" not in r]
    assert kept and all(r["language"] in ("en", "de") and r["punsafe"] <= 0.7 for r in kept)
    assert {r["NSFW"] for r in kept} == {"UNLIKELY", "UNSURE", "NSFW"}

    def counts(records):
        return [(s.stage, s.rows_in, s.kept, dict(s.dropped)) for s in merge_shard_records(records, names)]

    assert counts(remote) == counts(local)
    removal, language, tag = merge_shard_records(remote, names)
    assert removal.rows_in == 21 and removal.dropped == {"punsafe": 6, "keyword": 1}
    assert language.rows_in == removal.kept and language.dropped == {"language": 5}
    assert tag.rows_in == tag.kept == 9
    # The done markers are the local runner's format, so a run resumes across runners.
    assert read_done(str(tmp_path / "ray"), "00001") == json.loads(json.dumps(remote["00001"]))


@pytest.mark.slow
def test_ray_runner_resumes_per_shard(tmp_path, ray_runner):
    make_image_shards(tmp_path / "in", shards=2, per_shard=5)
    shards = image_shards(str(tmp_path / "in"))
    first = ray_runner.run_stages(shards[:1], stages(), str(tmp_path / "out"))
    marker = tmp_path / "out" / "00000.done.json"
    before = marker.stat().st_mtime_ns
    both = ray_runner.run_stages(shards, stages(), str(tmp_path / "out"))
    assert marker.stat().st_mtime_ns == before  # the finished shard was not redone
    assert both["00000"] == first["00000"] and "00001" in both
    assert (tmp_path / "out" / "00001.tar").exists()


@pytest.mark.slow
def test_ray_dedup_partitioned_by_hash_equals_the_local_dedup(tmp_path, ray_runner):
    make_image_shards(tmp_path / "in", shards=3, per_shard=6, duplicate_every=4, same_image_every=5)
    shards = image_shards(str(tmp_path / "in"))
    local = LocalRunner(batch_size=4, show_progress=False).run_dedup(str(tmp_path / "in"), str(tmp_path / "local"), 4, shards)
    remote = ray_runner.run_dedup(str(tmp_path / "in"), str(tmp_path / "ray"), 4, shards)
    assert (remote.rows_in, remote.kept, dict(remote.dropped)) == (local.rows_in, local.kept, dict(local.dropped))
    assert local.dropped["duplicate-hash"] == 4 and local.dropped["near-duplicate-phash"] >= 2
    assert output(tmp_path / "ray") == output(tmp_path / "local")
