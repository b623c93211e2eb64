"""``laion-hf oig build`` end to end, and publishing the result through the loopback Hub."""

import os
import subprocess
import sys

import datasets
import pytest
from huggingface_hub import HfApi
from typer.testing import CliRunner

from laion_hf.cli import app

from tests.oig.conftest import SAMPLE_RECIPE, dataset_files

pytestmark = pytest.mark.slow


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


def test_pushed_build_loads_each_config_from_the_hub(sample_build, hub):
    output, report = sample_build
    api = HfApi()
    api.create_repo("tester/oig-sample", repo_type="dataset")
    api.upload_folder(repo_id="tester/oig-sample", repo_type="dataset", folder_path=str(output), ignore_patterns=[".build/*"])
    for name in ["all", "squad_v2", "moderation"]:
        ds = datasets.load_dataset("tester/oig-sample", name, split="train", streaming=True)
        rows = list(ds)
        expected = sum(c.kept for c in report.constituents) if name == "all" else next(
            c.kept for c in report.all_reports() if c.name == name
        )
        assert len(rows) == expected
        assert set(rows[0]) == {"text", "messages", "metadata"}
