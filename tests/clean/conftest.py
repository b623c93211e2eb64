"""A generated sample LAION copy (metadata + img2dataset download + lists), shared by the clean tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from laion_hf.demo.sample_copy import generate_sample_copy


@pytest.fixture(scope="session")
def _sample_copy_master(tmp_path_factory):
    return generate_sample_copy(tmp_path_factory.mktemp("sample") / "copy", rows_per_shard=200, download_shards=3)


@pytest.fixture
def sample_copy(_sample_copy_master, tmp_path):
    """A private copy per test, so tests may damage their input."""
    root = tmp_path / "copy"
    shutil.copytree(_sample_copy_master.root, root)
    master = _sample_copy_master
    return type(master)(
        root=root,
        metadata_dir=root / "metadata",
        download_dir=root / "download",
        removal=[(kind, str(root / Path(path).relative_to(master.root))) for kind, path in master.removal],
        keyword_file=root / "lists" / "keywords.txt",
    )
