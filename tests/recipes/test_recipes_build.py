"""Every recipe runs on generated image shards (filter -> score -> dedup -> configs -> card).

No real checkpoint can be downloaded here, so laion400m, laion5b and relaion5b run with the shipped tiny
model and heads standing in for ViT-B/32, ViT-L/14 and LAION's heads, through recipe overrides, at the tiny
model's calibrated thresholds (LAION's 0.30 / 0.28 / 0.26 belong to ViT-B/32). What is tested is each
recipe's *shape*: its language rules, subsets, variants, tags and counts, not LAION's models.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from laion_hf.build import Build, BuildOptions, image_shards
from laion_hf.recipes import load_recipe
from tests.build_inputs import make_scene_shards

WEIGHTS = "pkg:laion_hf/models/weights"
TINY_CLIP = {"name": "laion-hf-tiny", "pretrained": f"{WEIGHTS}/laion-hf-tiny.safetensors"}
TINY_TEXT = {"name": "laion-hf-tiny-multilingual", "pretrained": f"{WEIGHTS}/laion-hf-tiny-multilingual"}
TINY_HEADS = {
    "nsfw": {"name": "tiny-nsfw", "path": f"{WEIGHTS}/heads/tiny-nsfw.safetensors"},
    "watermark": {"name": "tiny-watermark", "path": f"{WEIGHTS}/heads/tiny-watermark.safetensors"},
}
CALIBRATED = {"file": f"{WEIGHTS}/laion-hf-tiny.quality.json", "key": "threshold"}
CALIBRATED_MULTI = {"file": f"{WEIGHTS}/laion-hf-tiny.quality.json", "key": "multilingual_threshold"}


def tiny_overrides(recipe: str) -> dict:
    overrides = {"models.clip": TINY_CLIP, "models.nsfw": TINY_HEADS["nsfw"], "steps.filter.threshold": CALIBRATED}
    if recipe in ("laion5b", "relaion5b"):
        overrides |= {
            "models.clip_l14": TINY_CLIP,
            "models.mclip": TINY_TEXT,
            "models.watermark": TINY_HEADS["watermark"],
            "steps.filter.multilingual.threshold": CALIBRATED_MULTI,
        }
    return overrides


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    directory = tmp_path_factory.mktemp("scenes")
    return directory, make_scene_shards(directory)


def run(recipe: str, scenes, tmp_path):
    directory, rows = scenes
    loaded = load_recipe(recipe, tiny_overrides(recipe))
    report = Build(loaded, BuildOptions(inputs=[str(directory)], output=str(tmp_path), start_at="filter", show_progress=False)).run()
    kept = {name: [r for s in image_shards(c["dir"]) for r in pq.read_table(s.parquet).to_pylist()] for name, c in report.configs.items()}
    return report, {s.stage: s for s in report.stages}, kept, {r["key"]: r for r in rows}


@pytest.mark.slow
def test_laion400m_keeps_english_matched_pairs_and_tags_nsfw(scenes, tmp_path):
    report, stages, kept, rows = run("laion400m", scenes, tmp_path)
    default = kept["default"]
    assert default and {r["language"] for r in default} == {"en"}
    assert stages["language"].dropped == {"language": sum(1 for r in rows.values() if r["language"] != "en")}
    assert stages["clip-filter"].dropped["clip-similarity"] >= 1
    assert sum(not rows[r["key"]]["matched"] for r in default) <= 1  # mismatched captions are filtered out
    assert {r["NSFW"] for r in default} <= {"UNLIKELY", "UNSURE", "NSFW"}
    assert all(r["NSFW"] == "NSFW" for r in default if r["punsafe"] >= 0.5)
    assert "laion-hf-tiny" in open(report.card, encoding="utf-8").read()


@pytest.mark.slow
def test_laion5b_filters_every_language_and_splits_subsets(scenes, tmp_path):
    _, stages, kept, rows = run("laion5b", scenes, tmp_path)
    assert {r["language"] for r in kept["2B-en"]} == {"en"}
    assert {r["language"] for r in kept["2B-multi"]} <= {"de", "fr", "es"} and kept["2B-multi"]
    assert {r["language"] for r in kept["1B-nolang"]} <= {""}
    filtered = stages["clip-filter"].kept
    assert sum(len(v) for v in kept.values()) == stages["dedup"].kept <= filtered
    survivors = [r for subset in kept.values() for r in subset]
    assert sum(rows[r["key"]]["matched"] for r in survivors) >= 0.9 * len(survivors)


@pytest.mark.slow
def test_relaion5b_research_safe_removes_punsafe_above_045(scenes, tmp_path):
    _, stages, kept, rows = run("relaion5b", scenes, tmp_path)
    assert all(r["punsafe"] <= 0.95 for r in kept["research"])
    assert all(r["punsafe"] <= 0.45 for r in kept["research-safe"])
    assert stages["research-safe: removal"].dropped["punsafe"] >= 1  # the unsafe motif scores high
    unsafe_left = [r for r in kept["research-safe"] if rows[r["key"]]["unsafe"]]
    assert not unsafe_left
