"""Fixtures for the OIG tests: the shipped sample recipe built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from laion_hf.testing.fixtures import hub  # noqa: F401  (re-exported fixture)

REPO = Path(__file__).resolve().parents[2]
SAMPLE_RECIPE = REPO / "oig" / "recipes" / "sample.yaml"


@pytest.fixture(scope="session")
def sample_build(tmp_path_factory):
    """The sample recipe built with one worker: (output folder, BuildReport)."""
    from oig.build import build

    output = tmp_path_factory.mktemp("oig-sample") / "out"
    return output, build(SAMPLE_RECIPE, str(output))


def dataset_files(folder: Path) -> dict[str, bytes]:
    """Every file of a build's dataset (not the resume bookkeeping in .build/), by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".build" not in p.relative_to(folder).parts
    }
