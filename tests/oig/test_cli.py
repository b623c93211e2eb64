"""``laion-hf oig build`` end to end, and publishing the result through the loopback Hub."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi, hf_hub_download
from typer.testing import CliRunner

from laion_hf.cli import app
from laion_hf.hub.push import push_folder
from tests.oig.conftest import SAMPLE_RECIPE, dataset_files

pytestmark = pytest.mark.slow
CONFIGS = ["squad_v2", "summarization", "dialogue", "math", "code", "lists", "moderation"]


def test_cli_builds_the_sample_recipe_with_a_summary(sample_build, tmp_path):
    output, _ = sample_build
    result = CliRunner().invoke(app, ["oig", "build", str(SAMPLE_RECIPE), str(tmp_path / "cli"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "oig build: per stage" in result.output and "contaminated=2" in result.output
    assert "email=1" in result.output
    assert dataset_files(tmp_path / "cli") == dataset_files(output)


def test_cli_bad_recipe_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "from laion_hf.cli import main; main()", "oig", "build", str(tmp_path / "nope.yaml"), str(tmp_path / "o")],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "500"},
    )
    assert done.returncode == 2
    assert "nope.yaml: recipe not found" in done.stderr and "Traceback" not in done.stderr


def test_pushed_build_loads_each_config_and_never_publishes_removed_text(sample_build, hub):
    """`laion-hf push` of a build: every config loads from the Hub; no removed row's text is in any pushed file."""
    output, report = sample_build
    removed = pq.read_table(output / ".audit" / "squad_v2.parquet").to_pylist()
    assert [r["drop_reason"] for r in removed] == ["contaminated", "contaminated"]  # the planted benchmark passage
    audited = [r["text"] for name in CONFIGS for r in pq.read_table(output / ".audit" / f"{name}.parquet").to_pylist()]
    assert len(audited) == sum(c.overall().removed for c in report.all_reports()) and all(audited)
    result = push_folder(output, "tester/oig-sample")
    assert result.uploaded and not any(path.startswith((".audit", ".build")) for path in result.uploaded)
    api = HfApi()
    pushed = api.list_repo_files("tester/oig-sample", repo_type="dataset")
    assert set(pushed) == set(result.uploaded) and "removed/squad_v2.parquet" in pushed
    published = []
    for path in pushed:
        local = hf_hub_download("tester/oig-sample", path, repo_type="dataset", cache_dir=str(output.parent / "hub-cache"))
        published.append(readable_text(Path(local)))
    everything = "\n".join(published)
    # the benchmark passage and the contaminated rows are nowhere; no removed row's text is in a published
    # file (a duplicate's text may equal its kept member's, so kept data files are left out of that check)
    benchmark = json.loads((SAMPLE_RECIPE.parent.parent / "samples" / "benchmarks" / "qa_test.jsonl").read_text().splitlines()[0])
    assert benchmark["context"] in audited[0] and benchmark["context"] not in everything
    assert [text for text in (r["text"] for r in removed) if text in everything] == []
    not_kept_data = "\n".join(text for path, text in zip(pushed, published, strict=True) if not path.endswith("train-00000-of-00001.parquet"))
    assert [text for text in audited if text in not_kept_data] == []
    assert pq.read_schema(hf_hub_download("tester/oig-sample", "removed/math.parquet", repo_type="dataset")).names == [
        "id", "constituent", "drop_reason", "duplicate_of"
    ]
    for name in ["all", "squad_v2", "moderation"]:
        rows = list(datasets.load_dataset("tester/oig-sample", name, split="train", streaming=True))
        expected = sum(c.kept for c in report.constituents) if name == "all" else next(
            c.kept for c in report.all_reports() if c.name == name
        )
        assert len(rows) == expected
        assert set(rows[0]) == {"text", "messages", "metadata"}


def readable_text(path: Path) -> str:
    """A pushed file's text as a reader would see it: parquet decoded (its pages are compressed), others as UTF-8."""
    if path.suffix == ".parquet":
        return json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False, default=str)
    return path.read_bytes().decode("utf-8", errors="replace")
