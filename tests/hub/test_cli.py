"""From `laion-hf clean` output to the Hub and back, through the commands a user types."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from laion_hf.cli import app
from laion_hf.demo import clean_sample_copy, generate_sample_copy
from laion_hf.io.tar import iter_samples


@pytest.fixture
def cleaned(tmp_path):
    copy = generate_sample_copy(tmp_path / "copy", rows_per_shard=40, download_shards=2)
    clean_sample_copy(copy, tmp_path / "clean")
    return tmp_path / "clean"


def _run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_clean_output_published_pushed_and_loaded_per_config(hub, cleaned, tmp_path):
    import datasets

    wds_folder, meta_folder = tmp_path / "wds", tmp_path / "meta"
    configs = [f"--config={v}={cleaned / v / 'download'}" for v in ("research", "research-safe")]
    _run("publish", "--folder", wds_folder, "--family", "relaion5b", "--repo-id", "laion-hf/relaion-demo", *configs)
    card = (wds_folder / "README.md").read_text()
    assert "| research: clean | 64 |" in card and "| `research: punsafe` |" in card and "| `research-safe: punsafe` |" in card
    assert "| `research: punsafe >` | `0.95` |" in card and "| `research-safe: punsafe >` | `0.45` |" in card
    assert "| `url-sha256` | " in card and "unavailable" not in card
    _run("push", wds_folder, "laion-hf/relaion-demo")
    for variant in ("research", "research-safe"):
        expected = [key for tar in sorted((cleaned / variant / "download").glob("*.tar")) for key, _ in iter_samples(str(tar))]
        loaded = datasets.load_dataset("laion-hf/relaion-demo", variant, split="train", streaming=True)
        assert [row["__key__"] for row in loaded] == expected

    meta_configs = [f"--config={v}={cleaned / v / 'metadata'}" for v in ("research", "research-safe")]
    _run("publish", "--folder", meta_folder, "--family", "relaion5b", "--format", "parquet", *meta_configs)
    output = _run("push", meta_folder, "laion-hf/relaion-demo-metadata", "--files-per-commit", "2")
    assert "uploaded" in output
    for variant in ("research", "research-safe"):
        expected = [u for f in sorted((cleaned / variant / "metadata").glob("*.parquet")) for u in pq.read_table(f)["URL"].to_pylist()]
        loaded = datasets.load_dataset("laion-hf/relaion-demo-metadata", variant, split="train", streaming=True)
        assert [row["URL"] for row in loaded] == expected


def test_push_needs_exactly_one_target(tmp_path):
    (tmp_path / "README.md").write_text("---\n---\n")
    result = CliRunner().invoke(app, ["push", str(tmp_path)])
    assert result.exit_code != 0 and "either REPO_ID" in str(result.exception)


def test_push_to_a_folder(tmp_path, variants):
    _run("publish", "--folder", tmp_path / "hub", "--family", "laion5b", f"--config=research={variants['research'][0]}")
    _run("push", tmp_path / "hub", "--to", tmp_path / "published")
    assert (tmp_path / "published" / "README.md").exists()
    assert sorted(p.name for p in (tmp_path / "published" / "research").iterdir()) == ["train-00000-of-00001.tar"]


def test_publish_discovers_variant_dirs_and_reads_a_context_file(tmp_path, variants):
    (tmp_path / "card.yaml").write_text("license: cc-by-4.0\nlanguage: [en]\nknown_issues: [synthetic test data]\n")
    output = variants["research"][0].parent
    _run("publish", output, "--folder", tmp_path / "hub", "--family", "laion5b", "--context", tmp_path / "card.yaml", "--format", "parquet")
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "- synthetic test data" in card
    assert sorted(p.name for p in (tmp_path / "hub").iterdir() if p.is_dir() and not p.name.startswith(".")) == ["assets", "research", "research-safe"]


def test_bad_context_file_is_a_user_error(tmp_path, variants):
    from laion_hf.core.errors import UserError

    (tmp_path / "card.yaml").write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="card.yaml: card context must be a mapping"):
        CliRunner().invoke(app, ["publish", str(variants["research"][0]), "--folder", str(tmp_path / "hub"), "--context", str(tmp_path / "card.yaml")], catch_exceptions=False)
