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
    # each opt-out host's rows under their reason, the busy host's 429s waited out (no http-429) ...
    planted = result.crawl.planted
    assert {reason: by_stage["download"].dropped[reason] for reason in ("robots-txt", "tdmrep", "tdm-reservation", "x-robots-tag:noml", "x-robots-tag:noai", "http-404", "decode-error")} == {
        "robots-txt": planted["robots-txt"], "tdmrep": planted["tdmrep"], "tdm-reservation": planted["tdm-header"],
        "x-robots-tag:noml": planted["noml"], "x-robots-tag:noai": planted["noai"], "http-404": planted["missing"],
        "decode-error": planted["corrupt"]}
    assert planted["busy-host"] > 0 and "http-429" not in by_stage["download"].dropped
    # ... and the whole table, exactly.
    assert {s.stage: (s.rows_in, s.kept, dict(s.dropped)) for s in report.stages} == {
        "extract": (192, 171, {"data_url": 3, "duplicate_global": 2, "duplicate_in_file": 7, "no_alt": 3,
                               "short_caption": 3, "svg": 3}),
        "download": (171, 130, {"decode-error": 4, "http-404": 5, "image-under-5kb": 15, "robots-txt": 4,
                                "tdm-reservation": 3, "tdmrep": 3, "x-robots-tag:noai": 4, "x-robots-tag:noml": 3}),
        "clip-embed": (130, 130, {}),
        "clip-filter": (130, 107, {"clip-similarity": 23}),
        "score": (107, 107, {}),
        "dedup": (107, 99, {"near-duplicate-phash": 8}),
        "research: removal": (99, 80, {"keyword": 4, "punsafe": 14, "url-md5": 1}),
        "research-safe: removal": (99, 79, {"keyword": 4, "punsafe": 15, "url-md5": 1}),
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
    assert "| research | 80 | laion-hf-tiny | `index/research/` (Flat) | 1.000 |" in card

    # The research index, opened from the Hub, finds the scene the query describes: the config holds exactly one
    # red circle on green, and it is the nearest; the next is the closest scene to it (an orange circle on green).
    truth = [scene_of(url) for shard in image_shards(report.configs["research"]["dir"])
             for url in pq.read_table(shard.parquet)["url"].to_pylist()]
    assert truth.count(("red", "circle", "green")) == 1 and len(truth) == 80
    assert [row["truth"] for row in result.search[:2]] == [("red", "circle", "green"), ("orange", "circle", "green")]
    assert len(result.search) == 5
