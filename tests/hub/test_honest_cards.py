"""Cards state only what the reports beside the data show: on a real-pairs download, its clean, and a demo build."""

from __future__ import annotations

import hashlib
import sys

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from laion_hf.build import Build, BuildOptions
from laion_hf.clean import CleanOptions, clean_copy
from laion_hf.cli import main
from laion_hf.core.errors import UserError
from laion_hf.hub.evidence import choose_family, find_reports, gather
from laion_hf.hub.publish import publish_folder
from laion_hf.recipes import load_recipe


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """``laion-hf ARGS`` through the real entry point: (exit code, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["laion-hf", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return exit_.value.code, out.out + out.err


def card_of(folder) -> tuple[dict, str]:
    card = DatasetCard.load(folder / "README.md")
    return card.data.to_dict(), card.text


def successful_languages(directory) -> list[str]:
    from collections import Counter

    rows = [r for f in sorted(directory.glob("*.parquet")) for r in pq.read_table(f).to_pylist() if r["status"] == "success"]
    return [code for code, _ in Counter(r["language"] for r in rows if r["language"]).most_common()]


# -- a real-pairs download ------------------------------------------------------------------------


def test_real_download_without_a_family_is_refused_not_called_demo(monkeypatch, capsys, real_download, tmp_path):
    code, output = run_cli(monkeypatch, capsys, "publish", real_download, "--folder", tmp_path / "hub")
    assert code == 2 and "Traceback" not in output
    assert "no report beside the data names its family" in output and "download_report.json" in output
    assert not (tmp_path / "hub").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("family", "why"),
    [
        ("demo", "no build report of the demo recipe is beside it"),
        ("relaion5b", "show no Re-LAION-5B cleaning (removal lists or reference, punsafe limit, keyword filter)"),
    ],
)
def test_a_family_whose_claims_the_reports_cannot_back_is_refused(monkeypatch, capsys, real_download, tmp_path, family, why):
    code, output = run_cli(monkeypatch, capsys, "publish", real_download, "--folder", tmp_path / "hub", "--family", family)
    assert code == 2 and why in " ".join(output.split())
    assert not (tmp_path / "hub" / "README.md").exists()


def test_real_download_as_laion5b_states_the_download_and_nothing_more(monkeypatch, capsys, real_download, tmp_path):
    code, output = run_cli(monkeypatch, capsys, "publish", real_download, "--folder", tmp_path / "hub", "--family", "laion5b")
    assert code == 0, output
    data, text = card_of(tmp_path / "hub")
    assert data["license"] == "unknown"
    assert data["language"] == successful_languages(real_download) and "en" in data["language"]
    assert "- downloaded: 39 of 48 images saved (81.2%); failed: http-404 9" in text
    not_shown = text.split("Not shown by the reports, so not claimed for this copy (the laion5b release has these steps):")[1]
    assert "CLIP ViT-B/32 image-text similarity >= 0.28" in not_shown.split("## ")[0]
    for claim in ("no real data", "synthetic", "re-released", "removal lists applied", "Built by laion-hf's demo recipe"):
        assert claim not in text
    assert "No removal list is recorded in the reports." in text and "\n39 rows.\n" in text


def test_clean_of_the_real_download_is_relaion5b_with_its_removals_and_nothing_else(real_download, tmp_path):
    rows = [r for f in sorted(real_download.glob("*.parquet")) for r in pq.read_table(f).to_pylist() if r["status"] == "success"]
    listed = tmp_path / "reported.url-sha256.txt"
    listed.write_text("".join(hashlib.sha256(r["url"].encode()).hexdigest().upper() + "\n" for r in rows[:2]))
    clean_copy(str(real_download), str(tmp_path / "clean"), CleanOptions(remove=(("url-sha256", str(listed)),)), show_progress=False)

    publish_folder({"research": str(tmp_path / "clean")}, tmp_path / "hub")  # no family: the clean report names it
    data, text = card_of(tmp_path / "hub")
    assert text.startswith("\n# Re-LAION-5B-style cleaned copy (laion-hf)")
    assert "**No removal lists were applied to this copy**" not in text
    # the download's report is reached through the clean report's input, and comes first
    assert "- downloaded: 39 of 48 images saved (81.2%); failed: http-404 9\n" in text
    assert "- removal lists applied: `url-sha256` reported.url-sha256.txt (2 values): 2 rows removed" in text
    assert "| `url-sha256` | reported.url-sha256.txt | 2 | `" + hashlib.sha256(listed.read_bytes()).hexdigest() + "` |" in text
    not_shown = text.split("(the relaion5b release has these steps):")[1].split("## ")[0]
    assert "punsafe limit" in not_shown and "keyword filter" in not_shown and "hash lists" not in not_shown
    assert "37 rows." in text and data["size_categories"] == ["n<1K"]


def test_relaion5b_card_without_removal_lists_says_so_in_its_title_and_intro(real_download, tmp_path):
    keywords = tmp_path / "keywords.txt"
    keywords.write_text("Artists\n")
    clean_copy(str(real_download), str(tmp_path / "clean"), CleanOptions(keyword_file=str(keywords)), show_progress=False)
    publish_folder({"research": str(tmp_path / "clean")}, tmp_path / "hub", family="relaion5b")
    _, text = card_of(tmp_path / "hub")
    assert text.startswith("\n# LAION-5B copy with Re-LAION-5B variants but no removal lists (laion-hf)")
    assert "**No removal lists were applied to this copy**" in text and "No removal list is recorded in the reports." in text
    assert "removal lists applied" not in text and "- keyword filter (keywords.txt): " in text


def test_a_keep_reference_clean_counts_as_re_laion_removals(real_download, laion_pairs, tmp_path):
    import json

    reference = tmp_path / "relaion-metadata.parquet"
    pq.write_table(laion_pairs.slice(0, 40).select(["URL", "TEXT"]).rename_columns(["url", "caption"]), reference)
    clean_copy(str(real_download), str(tmp_path / "clean"), CleanOptions(keep_reference=str(reference)), show_progress=False)
    removed = json.loads((tmp_path / "clean" / "clean_report.json").read_text())["by_reason"]["not-in-reference"]
    publish_folder({"research": str(tmp_path / "clean")}, tmp_path / "hub")
    _, text = card_of(tmp_path / "hub")
    assert text.startswith("\n# Re-LAION-5B-style cleaned copy (laion-hf)") and "**No removal lists" not in text
    assert f"- rows absent from the reference {reference} removed: {removed}\n" in text and removed == 8


def test_reports_that_name_another_family_refuse_the_one_asked_for(real_download, tmp_path):
    (tmp_path / "keywords.txt").write_text("Artists\n")
    clean_copy(str(real_download), str(tmp_path / "clean"), CleanOptions(keyword_file=str(tmp_path / "keywords.txt")), show_progress=False)
    evidence = [gather("research", str(tmp_path / "clean"), find_reports(tmp_path / "clean"))]
    assert choose_family(None, evidence) == "relaion5b"
    with pytest.raises(UserError, match="--family laion400m: the reports say this data is relaion5b"):
        choose_family("laion400m", evidence)


def test_a_broken_report_is_a_user_error_naming_it(real_download, tmp_path):
    (real_download / "download_report.json").write_text("{not json")
    with pytest.raises(UserError, match="download_report.json: cannot read this report"):
        publish_folder({"default": str(real_download)}, tmp_path / "hub", family="laion5b")


# -- a demo build ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory):
    """The demo recipe from its filter step on synthetic shards (tiny CLIP, tiny heads), with a removal list."""
    from laion_hf.core.hashing import hex_digest
    from laion_hf.testing.synthetic.shards import write_shards

    root = tmp_path_factory.mktemp("demo-build")
    truth = write_shards(str(root / "in"), shards=2, per_shard=24, languages=("en", "de", "fr", "es"), mismatch_rate=0.3, size=64)
    reported = root / "reported.url-md5.txt"
    first = next(t.key for t in truth if t.matched and not t.unsafe)
    url = next(r["url"] for r in pq.read_table(root / "in" / "00000.parquet").to_pylist() if r["key"] == first)
    reported.write_text(hex_digest("md5", url.encode()) + "\n")
    options = BuildOptions(inputs=[str(root / "in")], output=str(root / "out"), start_at="filter", show_progress=False,
                           removals=(("url-md5", str(reported)),), repo_id="laion-hf/demo")
    report = Build(load_recipe("demo"), options).run()
    return root / "out", report


def test_demo_build_card_reports_rows_per_config_and_its_own_steps(demo_build):
    out, report = demo_build
    data, text = card_of(out / "hub")
    rows = {name: config["rows"] for name, config in report.configs.items()}
    assert f"`research` (default), {rows['research']:,} rows; `research-safe`, {rows['research-safe']:,} rows." in text
    assert f"{rows['research'] + rows['research-safe']:,} rows" not in text  # overlapping configs are never summed
    assert [(i["config_name"], i["splits"][0]["num_examples"]) for i in data["dataset_info"]] == list(rows.items())
    assert data["license"] == "unknown" and sorted(data["language"]) == ["de", "en", "es", "fr"]
    assert "- built by laion-hf's demo recipe (demo 1.0.0)" in text
    by_stage = {s.stage: s for s in report.stages}
    removed = sum(by_stage["clip-filter"].dropped.values())
    assert "similarity >= 0.7154 (pkg:laion_hf/models/weights/laion-hf-tiny.quality.json#threshold)" in text
    assert f"; {removed} of {by_stage['clip-filter'].rows_in} rows removed" in text
    assert "- removal lists applied: `url-md5` reported.url-md5.txt: 1 row removed" in text
    for config, limit in (("research", 0.95), ("research-safe", 0.45)):
        punsafe = by_stage[f"{config}: removal"].dropped.get("punsafe", 0)
        label = f"`{config}`" + (" (default)" if config == "research" else "") + f", {rows[config]} rows"
        assert f"\n{label}:\n\n- rows with punsafe > {limit} removed: {punsafe}\n\n" in text
    assert "extracted from WAT files" not in text and "downloaded:" not in text  # the build started at filter
    assert "| `filter: similarity >=` | `0.7154 (pkg:laion_hf/models/weights/laion-hf-tiny.quality.json#threshold)` |" in text


def test_republishing_a_build_reads_its_report_and_infers_the_demo_family(demo_build, monkeypatch, capsys, tmp_path):
    out, report = demo_build
    configs = [f"--config={name}={config['dir']}" for name, config in report.configs.items()]
    code, output = run_cli(monkeypatch, capsys, "publish", "--folder", tmp_path / "hub", "--format", "parquet", *configs)
    assert code == 0, output
    _, text = card_of(tmp_path / "hub")
    _, built = card_of(out / "hub")

    def section(card: str) -> str:
        return card.split("## What was done to this copy")[1].split("## How it was built")[0]

    # the same claims; the list's file name is in the build's own card only (build_report.json lacks --remove files)
    assert section(text) == section(built).replace("reported.url-md5.txt", "(file not recorded)")
    assert "\n# demo (laion-hf build)\n" in text and "| clip: laion-hf-tiny |" in text
