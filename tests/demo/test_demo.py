"""``make demo`` end to end: synthetic crawl -> build --recipe demo -> loopback Hub -> load_dataset streaming."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from laion_hf.build import image_shards


@pytest.mark.slow
def test_demo_builds_pushes_and_streams_back(tmp_path):
    from laion_hf.demo.run import run_demo, scene_of

    result = run_demo(tmp_path, workers=2, show_progress=False)
    report = result.report
    by_stage = {s.stage: s for s in report.stages}

    # Every planted case is caught by the stage that owns it, and counted under its reason.
    assert {"svg", "data_url", "short_caption", "no_alt"} <= set(by_stage["extract"].dropped)
    assert by_stage["extract"].dropped["duplicate_in_file"] + by_stage["extract"].dropped["duplicate_global"] >= 1
    assert {"http-404", "decode-error", "x-robots-tag:noai", "image-under-5kb"} <= set(by_stage["download"].dropped)
    # the other hosts' opt-outs, each under its reason; the busy host's 429s were waited out (no http-429)
    planted = result.crawl.planted
    assert {reason: by_stage["download"].dropped[reason] for reason in ("robots-txt", "tdmrep", "tdm-reservation", "x-robots-tag:noml")} == {
        "robots-txt": planted["robots-txt"], "tdmrep": planted["tdmrep"], "tdm-reservation": planted["tdm-header"],
        "x-robots-tag:noml": planted["noml"]}
    assert planted["busy-host"] > 0 and "http-429" not in by_stage["download"].dropped
    assert by_stage["clip-filter"].dropped["clip-similarity"] > 0
    assert by_stage["dedup"].dropped["near-duplicate-phash"] > 0
    assert by_stage["research: removal"].dropped["url-md5"] == 1
    assert by_stage["research: removal"].dropped["keyword"] > 0
    assert by_stage["research-safe: removal"].dropped["punsafe"] > by_stage["research: removal"].dropped.get("punsafe", 0)

    # The steps chain: what one step kept is what the next one read.
    chain = [by_stage[name] for name in ("extract", "download", "clip-embed", "clip-filter", "score", "dedup")]
    for before, after in zip(chain, chain[1:]):
        assert after.rows_in == before.kept, (before.stage, after.stage)

    # research-safe really is safe at 0.45, and what was built is what streams back from the Hub.
    for shard in image_shards(report.configs["research-safe"]["dir"]):
        assert max(pq.read_table(shard.parquet)["punsafe"].to_pylist()) <= 0.45
    assert result.streamed == {name: config["rows"] for name, config in report.configs.items()}
    assert result.streamed["research-safe"] < result.streamed["research"]
    row = result.first_rows["research-safe"]
    assert row["txt"] and row["jpg"].size == (160, 160) and json.loads(json.dumps(row["json"]))["key"] == row["__key__"]

    card = open(report.card, encoding="utf-8").read()
    assert "research-safe" in card and "clip-similarity" in card and "laion-hf-tiny" in card
    assert "| research | 92 | laion-hf-tiny | `index/research/` (Flat) | 1.000 |" in card

    # The research index, opened from the Hub, finds the scenes the query describes: the config holds exactly
    # two red circles on green, and they are the two nearest.
    truth = [scene_of(url) for shard in image_shards(report.configs["research"]["dir"])
             for url in pq.read_table(shard.parquet)["url"].to_pylist()]
    assert truth.count(("red", "circle", "green")) == 2
    assert [row["truth"] for row in result.search[:2]] == [("red", "circle", "green")] * 2
    assert result.search[2]["truth"] != ("red", "circle", "green") and len(result.search) == 5
