"""Recipes load by name or path, carry LAION's thresholds, and reject bad edits with file, line and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from laion_hf.recipes import RecipeError, builtin_recipes, load_recipe, parse_override
from laion_hf.recipes.recipe import recipe_path


def test_builtin_recipes_are_listed():
    assert {"laion400m", "laion5b", "relaion5b", "demo"} <= set(builtin_recipes())


def test_laion400m_is_english_vit_b32_at_030_with_nsfw_tag():
    recipe = load_recipe("laion400m")
    assert list(recipe.steps) == ["extract", "download", "filter", "score", "dedup"]
    assert recipe.models[recipe.filter.model].name == "ViT-B-32"
    assert recipe.models[recipe.filter.model].pretrained == "openai"
    assert recipe.filter.threshold.value == 0.30 and recipe.filter.threshold.source == "recipe"
    assert recipe.filter.languages == ("en",)
    assert recipe.filter.multilingual_model is None
    assert recipe.score.nsfw_tag is not None and "punsafe" in recipe.score.heads
    assert recipe.score.drop_above == {}  # the tag never drops
    assert [c.name for c in recipe.configs] == ["default"]
    assert "2111.02114" in recipe.source["paper"]


def test_laion5b_thresholds_and_language_subsets():
    recipe = load_recipe("laion5b")
    assert recipe.filter.threshold.value == 0.28
    assert recipe.models[recipe.filter.multilingual_model].name == "clip-ViT-B-32-multilingual-v1"
    assert recipe.filter.multilingual_threshold.value == 0.26
    subsets = {c.name: c for c in recipe.configs}
    assert list(subsets) == ["2B-en", "2B-multi", "1B-nolang"]
    assert subsets["2B-en"].language_in == ("en",) and subsets["2B-en"].default
    assert subsets["2B-multi"].language_not_in == ("en",) and subsets["2B-multi"].language_detected is True
    assert subsets["1B-nolang"].language_detected is False


def test_relaion5b_variants():
    recipe = load_recipe("relaion5b")
    variants = {c.name: c for c in recipe.configs}
    assert variants["research"].punsafe_above == 0.95 and variants["research"].default
    assert variants["research-safe"].punsafe_above == 0.45
    assert recipe.filter.threshold.value == 0.28 and recipe.filter.multilingual_threshold.value == 0.26


def _copy(tmp_path: Path, name: str, edit) -> Path:
    data = yaml.safe_load(Path(recipe_path(name)).read_text())
    edit(data)
    path = tmp_path / "my-recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_copied_recipe_with_a_changed_threshold_and_model(tmp_path):
    def edit(data):
        data["steps"]["filter"]["threshold"] = 0.33
        data["models"]["clip"] = {"name": "ViT-L-14", "pretrained": "/models/vit-l-14.pt"}

    recipe = load_recipe(str(_copy(tmp_path, "laion400m", edit)))
    assert recipe.filter.threshold.value == 0.33
    assert recipe.models["clip"].name == "ViT-L-14"
    assert recipe.path.endswith("my-recipe.yaml")


def test_overrides_by_dotted_key_and_config_name():
    recipe = load_recipe(
        "relaion5b",
        dict(
            [
                parse_override("steps.filter.threshold=0.31"),
                parse_override("configs.research-safe.punsafe_above=0.5"),
                parse_override("steps.filter.languages=[en, de]"),
            ]
        ),
    )
    assert recipe.filter.threshold.value == 0.31
    assert {c.name: c.punsafe_above for c in recipe.configs}["research-safe"] == 0.5
    assert recipe.filter.languages == ("en", "de")


def test_threshold_read_from_a_calibration_file(tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps({"filter": {"threshold": 0.2345}}))

    def edit(data):
        data["steps"]["filter"]["threshold"] = {"file": "calibration.json", "key": "filter.threshold"}

    recipe = load_recipe(str(_copy(tmp_path, "laion400m", edit)))
    assert recipe.filter.threshold.value == 0.2345
    assert recipe.filter.threshold.source == "calibration.json#filter.threshold"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["steps"]["filter"].__setitem__("treshold", 0.3), r"steps\.filter\.treshold: unknown key"),
        (lambda d: d["steps"]["filter"].__setitem__("threshold", 1.5), r"steps\.filter\.threshold: 1\.5 is out of range"),
        (lambda d: d["steps"]["filter"].__setitem__("threshold", "high"), r"steps\.filter\.threshold: expected a number"),
        (lambda d: d["steps"]["filter"].__setitem__("model", "vit-h"), r"unknown model 'vit-h'"),
        (lambda d: d["configs"][1].__setitem__("default", True), r"exactly one config must have default: true \(found 2\)"),
        (lambda d: d["configs"][0].__setitem__("punsafe_above", -0.1), r"configs\[0\]\.punsafe_above: -0\.1 is out of range"),
        (lambda d: d["configs"][0].__setitem__("remove", [{"kind": "url-crc", "file": "x.txt"}]), r"unknown kind 'url-crc'"),
        (lambda d: d.pop("source"), r"missing required key 'source'"),
        (lambda d: d.__setitem__("format", 2), r"recipe format 1, not 2"),
        (lambda d: d["steps"].__setitem__("embed", {}), r"steps\.embed: unknown key"),
        (lambda d: d["steps"].pop("score"), r"limits punsafe but steps\.score has no punsafe head"),
        (lambda d: d["configs"].append({"name": "research"}), r"config name 'research' is used twice"),
    ],
)
def test_bad_edits_are_clear_errors_naming_file_line_and_key(tmp_path, edit, message):
    path = _copy(tmp_path, "relaion5b", edit)
    with pytest.raises(RecipeError, match=message) as info:
        load_recipe(str(path))
    assert str(info.value).startswith(str(path))


def test_error_names_the_line_of_the_bad_key(tmp_path):
    text = Path(recipe_path("laion400m")).read_text().replace("threshold: 0.30", "threshold: 3.0")
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "threshold: 3.0" in l)
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=rf"r\.yaml:{line}: steps\.filter\.threshold"):
        load_recipe(str(path))


def test_unknown_recipe_and_invalid_yaml(tmp_path):
    with pytest.raises(RecipeError, match="neither a built-in recipe"):
        load_recipe("laion9b")
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: 1\nsteps: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(str(bad))


def test_bad_override_is_a_clear_error():
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        parse_override("steps.filter.threshold")
    with pytest.raises(RecipeError, match="no entry named 'nope'"):
        load_recipe("relaion5b", {"configs.nope.punsafe_above": 0.5})
