"""Fixtures of the search tests: a real embeddings folder from `filter` on synthetic shards, and its index."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from laion_hf.cli import main
from laion_hf.testing.fixtures import hub  # noqa: F401  (re-exported fixture)
from laion_hf.testing.synthetic import Attributes, sample

DEMO_SEED = 3
PER_SHARD = 128


@dataclass
class DemoIndex:
    """The filter output of 2 x 128 synthetic scenes, its index, and each kept key's true scene."""

    filtered: Path
    index: Path
    truth: dict[str, Attributes]


def scene_of(key: str) -> Attributes:
    """The attributes `write_shards(seed=DEMO_SEED, per_shard=PER_SHARD)` drew for ``key`` (shard + index)."""
    shard, index = int(key[:5]), int(key[5:])
    return sample(DEMO_SEED * 1_000_003 + shard * PER_SHARD + index).attributes


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory) -> DemoIndex:
    from laion_hf.search.index import build_index
    from laion_hf.steps.filter import filter_shards
    from laion_hf.testing.synthetic.shards import write_shards

    root = tmp_path_factory.mktemp("search-demo")
    write_shards(str(root / "shards"), shards=2, per_shard=PER_SHARD, languages=("en",), mismatch_rate=0.0,
                 seed=DEMO_SEED)
    filter_shards(str(root / "shards"), str(root / "filtered"), model="laion-hf-tiny", batch_size=64, show_progress=False)
    build_index(root / "filtered", root / "index", model="laion-hf-tiny")
    import pyarrow.parquet as pq

    keys = [k for p in sorted((root / "filtered" / "metadata").glob("*.parquet")) for k in pq.read_table(p)["key"].to_pylist()]
    return DemoIndex(root / "filtered", root / "index", {key: scene_of(key) for key in keys})


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli(*args)`` runs ``laion-hf ARGS`` in this process (the entry point itself): (exit code, stdout, stderr)."""

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["laion-hf", *map(str, args)])
        monkeypatch.setenv("COLUMNS", "10000")  # no wrapping: a message is found whole, whatever the tmp path length
        with pytest.raises(SystemExit) as exited:
            main()
        captured = capsys.readouterr()
        return exited.value.code or 0, captured.out, captured.err.replace("\n", "")

    return run
