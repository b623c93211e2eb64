from __future__ import annotations

import pytest
from huggingface_hub import DatasetCard

from laion_hf.hub.card import CardError, render_card, size_category
from laion_hf.hub.layout import write_hub_folder
from laion_hf.hub.plots import save_plots

REPORT = {
    "total": {"stage": "clean", "rows_in": 1000, "kept": 940, "dropped": {"removal_list": 50, "punsafe": 10}, "seconds": 1.0},
    "by_reason": {"removal_list": 50, "punsafe": 10},
}


@pytest.mark.parametrize("family", ["laion400m", "laion5b", "relaion5b", "demo"])
def test_every_family_renders_yaml_the_hub_client_parses(family, variants, tmp_path):
    layout = write_hub_folder({n: str(p) for n, (p, _) in variants.items()}, str(tmp_path / "hub"))
    card = render_card(family, {"license": "cc-by-4.0", "report": REPORT, "repo_id": "o/n"}, layout=layout)
    parsed = DatasetCard(str(card))
    data = parsed.data.to_dict()
    assert data["license"] == "cc-by-4.0" and data["size_categories"] == ["n<1K"]
    assert [c["config_name"] for c in data["configs"]] == ["research", "research-safe"]
    assert sum(bool(c.get("default")) for c in data["configs"]) == 1
    assert "| `removal_list` | 50 |" in parsed.text and "| clean | 1,000 | 940 | 60 |" in parsed.text
    assert 'load_dataset("o/n", "research"' in parsed.text


def test_gating_fields_only_when_asked(tmp_path):
    assert "extra_gated_prompt" not in render_card("demo", {}).data.to_dict()
    gated = render_card("demo", {"gated": True, "gated_prompt": "Research only."}).data.to_dict()
    assert gated["extra_gated_prompt"] == "Research only." and gated["extra_gated_fields"]


def test_any_family_template_dir_works_and_unknown_family_is_a_clear_error(tmp_path):
    (tmp_path / "oig.md").write_text("---\n{{ card_data }}\n---\n# {{ pretty_name }}\n{{ stages_table }}\n")
    card = render_card("oig", {"pretty_name": "OIG", "stages": [{"stage": "dedup", "rows_in": 3, "kept": 2, "dropped": {"near_dup": 1}}]}, template_dir=tmp_path)
    assert "# OIG" in card.text and "| dedup | 3 | 2 | 1 |" in card.text
    with pytest.raises(CardError, match="no card template for family 'nope'"):
        render_card("nope", {}, template_dir=tmp_path)


def test_size_categories():
    assert [size_category(n) for n in (0, 999, 1000, 5_526_641_167)] == ["n<1K", "n<1K", "1K<n<10K", "1B<n<10B"]


def test_plots_cover_score_columns_and_languages_of_successful_rows(variants, tmp_path):
    from laion_hf.hub.plots import collect

    parquets = sorted(str(p) for p in variants["research"][0].glob("*.parquet"))
    histograms, languages = collect(parquets)
    successful = variants["research"][1]
    assert int(histograms["similarity"].sum()) == len(successful) == sum(languages.values())
    saved = save_plots(parquets, tmp_path)
    assert {p.path for p in saved} == {"assets/similarity_histogram.png", "assets/punsafe_histogram.png", "assets/language_distribution.png"}
    assert all((tmp_path / p.path).read_bytes()[:4] == b"\x89PNG" for p in saved)
