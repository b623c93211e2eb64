from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import DatasetCard

import laion_hf
from laion_hf.hub.card import CARDS_DIR, CardError, render_card, size_category
from laion_hf.hub.layout import write_hub_folder

REPORT = {
    "total": {"stage": "clean", "rows_in": 1000, "kept": 940, "dropped": {"removal_list": 50, "punsafe": 10}, "seconds": 1.0},
    "by_reason": {"removal_list": 50, "punsafe": 10},
}


@pytest.mark.parametrize("family", ["laion400m", "laion5b", "relaion5b", "demo"])
def test_every_family_renders_yaml_the_hub_client_parses(family, variants, tmp_path):
    layout = write_hub_folder({n: str(p) for n, (p, _) in variants.items()}, str(tmp_path / "hub"))
    card = render_card(family, {"license": "cc-by-4.0", "language": ["en", "de"], "report": REPORT, "repo_id": "o/n"}, layout=layout)
    parsed = DatasetCard(str(card))
    data = parsed.data.to_dict()
    assert data["license"] == "cc-by-4.0" and data["language"] == ["en", "de"] and data["size_categories"] == ["n<1K"]
    assert [c["config_name"] for c in data["configs"]] == ["research", "research-safe"]
    assert sum(bool(c.get("default")) for c in data["configs"]) == 1
    assert "| `removal_list` | 50 |" in parsed.text and "| clean | 1,000 | 940 | 60 |" in parsed.text
    assert 'load_dataset("o/n", "research"' in parsed.text
    # rows per config (research: 15 of 18 downloaded, research-safe: 10), never their sum
    assert "Rows per config (each counted on its own; configs may overlap): `research` (default), 15 rows; `research-safe`, 10 rows." in parsed.text
    assert "25 rows" not in parsed.text
    assert "No laion-hf report was found beside the data, so this card claims no processing step." in parsed.text


def test_size_category_is_that_of_the_largest_config_not_a_sum(make_img2dataset_dir, tmp_path):
    make_img2dataset_dir(tmp_path / "a", shards=2, per_shard=300)
    make_img2dataset_dir(tmp_path / "b", shards=2, per_shard=300)
    layout = write_hub_folder({"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}, str(tmp_path / "hub"))
    assert render_card("laion5b", {}, layout=layout).data.size_categories == ["n<1K"]  # 600 each, 1,200 summed


def test_license_is_unknown_unless_stated_and_per_row_licences_are_listed():
    unstated = render_card("laion5b", {"row_licenses": {"?": 24, "https://creativecommons.org/licenses/by/4.0/": 13}})
    assert unstated.data.license == "unknown"
    assert "Not stated: the publisher gave no licence (`laion-hf publish --license ID`)" in unstated.text
    assert "`?` 24, `https://creativecommons.org/licenses/by/4.0/` 13." in unstated.text
    stated = render_card("laion5b", {"license": "cc-by-4.0"})
    assert stated.data.license == "cc-by-4.0" and "`cc-by-4.0`, as stated by the publisher." in stated.text
    assert "Per-row licences" not in stated.text


def test_gating_fields_only_when_asked(tmp_path):
    assert "extra_gated_prompt" not in render_card("laion5b", {}).data.to_dict()
    gated = render_card("laion5b", {"gated": True, "gated_prompt": "Research only."}).data.to_dict()
    assert gated["extra_gated_prompt"] == "Research only." and gated["extra_gated_fields"]


def test_any_family_template_dir_works_and_unknown_family_is_a_clear_error(tmp_path):
    (tmp_path / "oig.md").write_text("---\n{{ card_data }}\n---\n# {{ pretty_name }}\n{{ stages_table }}\n")
    card = render_card("oig", {"pretty_name": "OIG", "stages": [{"stage": "dedup", "rows_in": 3, "kept": 2, "dropped": {"near_dup": 1}}]}, template_dir=tmp_path)
    assert "# OIG" in card.text and "| dedup | 3 | 2 | 1 |" in card.text
    with pytest.raises(CardError, match="no card template for family 'nope'"):
        render_card("nope", {}, template_dir=tmp_path)


def test_the_shared_layout_is_not_a_family():
    with pytest.raises(CardError, match=r"no card template for family '_base' \(known: demo, laion400m, laion5b, oig, relaion5b\)"):
        render_card("_base", {})


def test_card_templates_are_package_data():
    """Found through the package (importlib.resources), so an installed wheel has them (see test_wheel.py)."""
    assert CARDS_DIR == Path(laion_hf.__file__).parent / "cards"
    assert {p.name for p in CARDS_DIR.glob("*.md")} == {"_base.md", "demo.md", "laion400m.md", "laion5b.md", "relaion5b.md"}
    assert (CARDS_DIR / "oig" / "oig.md").is_file()


def test_size_categories():
    assert [size_category(n) for n in (0, 999, 1000, 5_526_641_167)] == ["n<1K", "n<1K", "1K<n<10K", "1B<n<10B"]


def test_the_card_says_which_layout_the_repo_is_and_which_suits_each_reader(variants, tmp_path):
    from webdataset.shardlists import expand_urls

    sources = {n: str(p) for n, (p, _) in variants.items()}
    tars = write_hub_folder(sources, str(tmp_path / "tars"), target_shard_bytes=1)
    text = DatasetCard(str(render_card("laion5b", {"repo_id": "o/n"}, layout=tars))).text
    assert "This repo is WebDataset tars" in text and "--format parquet --include-images" in text
    # the webdataset snippet names every shard of the default config, and only those
    url = text.split('wds.WebDataset("', 1)[1].split('"', 1)[0]
    prefix = "https://huggingface.co/datasets/o/n/resolve/main/"
    assert [u.removeprefix(prefix) for u in expand_urls(url)] == tars.configs[0].files == [
        "research/train-00000-of-00003.tar", "research/train-00001-of-00003.tar", "research/train-00002-of-00003.tar"]

    with_images = write_hub_folder(sources, str(tmp_path / "images"), format="parquet", include_images=True)
    text = DatasetCard(str(render_card("laion5b", {}, layout=with_images))).text
    assert "Parquet with the image bytes in an `image` column: the fastest layout for `load_dataset`" in text
    assert "--format webdataset" in text

    metadata = write_hub_folder(sources, str(tmp_path / "metadata"), format="parquet")
    text = DatasetCard(str(render_card("laion5b", {}, layout=metadata))).text
    assert "This repo is Parquet metadata" in text and "image bytes" not in text
