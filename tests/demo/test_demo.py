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

    # Every planted case is caught by the step that owns it, counted under its reason (the demo is deterministic):
    # the crawl planted 5 missing, 4 corrupt and 4 noai links, 3 of each extract rejection per file...
    assert result.crawl.planted["missing"] == 5 and result.crawl.planted["corrupt"] == 4 and result.crawl.planted["noai"] == 4
    assert {s.stage: (s.rows_in, s.kept, dict(s.dropped)) for s in report.stages} == {
        "extract": (192, 171, {"data_url": 3, "duplicate_global": 4, "duplicate_in_file": 5, "no_alt": 3,
                               "short_caption": 3, "svg": 3}),
        "download": (171, 143, {"decode-error": 4, "http-404": 5, "image-under-5kb": 15, "x-robots-tag": 4}),
        "clip-embed": (143, 143, {}),
        "clip-filter": (143, 120, {"clip-similarity": 23}),
        "score": (120, 120, {}),
        "dedup": (120, 111, {"near-duplicate-phash": 9}),
        "research: removal": (111, 92, {"keyword": 4, "punsafe": 14, "url-md5": 1}),
        "research-safe: removal": (111, 91, {"keyword": 4, "punsafe": 15, "url-md5": 1}),
    }

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
