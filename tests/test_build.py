"""``laion-hf build``: steps resume at their boundary, configs are cut as the recipe says, the card has the counts."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from laion_hf.build import Build, BuildError, BuildOptions, image_shards
from laion_hf.cli import app
from laion_hf.core.errors import UserError
from laion_hf.recipes import load_recipe
from tests.build_inputs import make_image_shards


def kept_rows(directory):
    return [row for shard in image_shards(str(directory)) for row in pq.read_table(shard.parquet).to_pylist()]


def build(recipe, inputs, output, **options):
    return Build(recipe, BuildOptions(inputs=[str(inputs)], output=str(output), start_at="configs", show_progress=False, **options)).run()


def test_relaion5b_variants_from_image_shards(tmp_path):
    rows = make_image_shards(tmp_path / "in", shards=2, per_shard=10)
    removal = tmp_path / "reported-links.txt"
    from laion_hf.core.hashing import hex_digest

    removal.write_text(hex_digest("md5", rows[0]["url"].encode()) + "\n")

    report = build(load_recipe("relaion5b"), tmp_path / "in", tmp_path / "out", removals=(("url-md5", str(removal)),))

    research = kept_rows(tmp_path / "out" / "steps" / "configs" / "research")
    safe = kept_rows(tmp_path / "out" / "steps" / "configs" / "research-safe")
    # punsafe of row n is n/20: research drops > 0.95 (n = 20: none), research-safe > 0.45 (n >= 10)
    assert [r["key"] for r in research] == [r["key"] for r in rows[1:]]
    assert [r["key"] for r in safe] == [r["key"] for r in rows[1:10]]
    by_stage = {s.stage: s for s in report.stages}
    assert by_stage["research: removal"].dropped == {"url-md5": 1}
    assert by_stage["research-safe: removal"].dropped == {"url-md5": 1, "punsafe": 10}
    assert report.configs["research"]["rows"] == 19 and report.configs["research-safe"]["rows"] == 9

    card = (tmp_path / "out" / "hub" / "README.md").read_text()
    assert "research-safe" in card and "0.45" in card and "url-md5" in card
    saved = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert saved["recipe"]["name"] == "relaion5b" and saved["card"] == report.card
    assert (tmp_path / "out" / "hub" / "build_report.json").exists()


def test_laion5b_subsets_split_by_language(tmp_path):
    rows = make_image_shards(tmp_path / "in", shards=1, per_shard=10)
    report = build(load_recipe("laion5b"), tmp_path / "in", tmp_path / "out")
    subsets = {name: kept_rows(config["dir"]) for name, config in report.configs.items()}
    assert {r["language"] for r in subsets["2B-en"]} == {"en"}
    assert {r["language"] for r in subsets["2B-multi"]} == {"de", "fr"}
    assert {r["language"] for r in subsets["1B-nolang"]} == {""}
    assert sum(len(s) for s in subsets.values()) == len(rows)  # the subsets partition the rows


def test_a_finished_step_is_not_redone_and_counts_are_reused(tmp_path):
    make_image_shards(tmp_path / "in", shards=2, per_shard=5)
    first = build(load_recipe("relaion5b"), tmp_path / "in", tmp_path / "out")
    research = tmp_path / "out" / "steps" / "configs" / "research"
    marker = research / ".laion-hf" / "done" / "_step.json"
    stamp, tar_stamp = marker.stat().st_mtime_ns, (research / "00000.tar").stat().st_mtime_ns
    second = build(load_recipe("relaion5b"), tmp_path / "in", tmp_path / "out")
    assert marker.stat().st_mtime_ns == stamp
    assert (research / "00000.tar").stat().st_mtime_ns == tar_stamp  # would be rewritten if the step ran again
    assert [s.to_dict() | {"seconds": 0} for s in second.stages] == [s.to_dict() | {"seconds": 0} for s in first.stages]


def test_an_interrupted_step_resumes_per_shard(tmp_path):
    make_image_shards(tmp_path / "in", shards=2, per_shard=5)
    full = build(load_recipe("relaion5b"), tmp_path / "in", tmp_path / "full")
    build(load_recipe("relaion5b"), tmp_path / "in", tmp_path / "out")
    safe = tmp_path / "out" / "steps" / "configs" / "research-safe"
    # As if the run died after shard 00000 of research-safe: no step marker, shard 00001 unfinished.
    done = safe / ".laion-hf" / "done"
    (done / "_step.json").unlink()
    (done / "00001.json").unlink()
    (tmp_path / "out" / "steps" / "publish" / ".laion-hf" / "done" / "_step.json").unlink()
    shard0 = (done / "00000.json").stat().st_mtime_ns
    resumed = build(load_recipe("relaion5b"), tmp_path / "in", tmp_path / "out")
    assert (done / "00000.json").stat().st_mtime_ns == shard0
    assert kept_rows(safe) == kept_rows(tmp_path / "full" / "steps" / "configs" / "research-safe")
    assert [(s.stage, s.rows_in, s.kept) for s in resumed.stages] == [(s.stage, s.rows_in, s.kept) for s in full.stages]


def test_bad_start_and_missing_input_are_clear_errors(tmp_path):
    with pytest.raises(BuildError, match="--start-at 'embed'"):
        Build(load_recipe("relaion5b"), BuildOptions(inputs=["x"], output=str(tmp_path), start_at="embed"))
    with pytest.raises(UserError, match="not a directory"):
        build(load_recipe("relaion5b"), tmp_path / "nowhere", tmp_path / "out")


def test_cli_build_prints_the_stage_table(tmp_path):
    make_image_shards(tmp_path / "in", shards=1, per_shard=6)
    result = CliRunner().invoke(
        app,
        ["build", "--recipe", "relaion5b", "--start-at", "configs", "--set", "configs.research-safe.punsafe_above=0.3",
         str(tmp_path / "in"), str(tmp_path / "out")],
    )
    assert result.exit_code == 0, result.output
    assert "research-safe: removal" in result.output and "punsafe=4" in result.output
    assert "dataset card:" in result.output


def test_recipe_builder_reads_a_finished_build(tmp_path):
    from builders.recipes import LaionRecipe

    make_image_shards(tmp_path / "in", shards=2, per_shard=5)
    report = build(load_recipe("relaion5b"), tmp_path / "in", tmp_path / "out")
    builder = LaionRecipe(config_name="relaion5b-research-safe", data_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    dataset = builder.as_dataset("train").cast_column("image", __import__("datasets").Image(decode=False))
    expected = kept_rows(report.configs["research-safe"]["dir"])
    assert [r["key"] for r in dataset] == [r["key"] for r in expected]
    assert dataset[0]["image"]["bytes"] == b"image-bytes-0" * 20
    assert {"relaion5b-research", "laion5b-2B-multi", "laion400m-default"} <= {c.name for c in LaionRecipe.BUILDER_CONFIGS}
