"""Fixtures every test module may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("LAION_HF_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared data/models folder; tests that need it skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent (set LAION_HF_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def laion_pairs(shared_dir: Path):
    """10,000 real LAION (URL, TEXT) pairs as a pyarrow Table."""
    import pyarrow.parquet as pq

    path = shared_dir / "data" / "laion_pairs_10000.parquet"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return pq.read_table(path)
