"""An installed wheel (not the source tree) renders cards: the templates are package data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "demo-output")


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_publishes_a_card(tmp_path, variants):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)  # build from a copy: the tree stays clean
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("laion_hf-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # dependencies from this environment; a plain path line runs none of its .pth hooks (e.g. an editable laion-hf)
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(python, "-c", "import laion_hf, oig.card; print(laion_hf.__file__); print(oig.card.CARD_DIR / 'oig.md')", env=env, cwd=tmp_path)
    module, oig_card = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(oig_card).is_file()
    run(venv / "bin" / "laion-hf", "publish", variants["research"][0], "--family", "laion5b", "--folder", tmp_path / "hub", env=env, cwd=tmp_path)
    card = (tmp_path / "hub" / "README.md").read_text(encoding="utf-8")
    assert "\n# LAION-5B-style image-text pairs (laion-hf)\n" in card and "## What was done to this copy" in card
    assert "Built with laion-hf 0.1.0." in card  # no git commit outside a checkout
