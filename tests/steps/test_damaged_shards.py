"""filter, score and dedup on damaged input shards: a cut tar is an error naming it, a lost sample is counted.

Before, a tar cut at a member boundary read as a shorter tar and a ``status=success``
row without its sample was skipped, and ``rows in = kept + removed`` still held because
rows in was counted from the tar.
"""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest

from laion_hf.core.errors import UserError
from laion_hf.core.stage import StageStats
from laion_hf.io.samples import MISSING_IMAGE
from laion_hf.io.tar import CorruptTarError
from laion_hf.steps.dedup import dedup_shards
from laion_hf.steps.filter import filter_shards
from laion_hf.steps.score import score_shards
from laion_hf.testing.synthetic.shards import write_shards
from tests.damaged_shards import CUTS, cut_tar, drop_sample

STEPS = ("filter", "score", "dedup")
PER_SHARD = 6


def run_step(step: str, source, output) -> tuple[int, int, Counter]:
    """Run one image step; return (rows in, rows kept, rows removed by reason) over the whole run."""
    if step == "filter":
        report = filter_shards(str(source), str(output), model="laion-hf-tiny", batch_size=8, workers=1, show_progress=False)
        stages = report.stages
    elif step == "score":
        report = score_shards(str(source), str(output), nsfw="tiny", watermark="tiny", aesthetic="tiny", clip="laion-hf-tiny",
                              batch_size=8, show_progress=False)
        stages = [StageStats.from_dict(s) for s in report["stages"]]
    else:
        stages = [dedup_shards(str(source), str(output), show_progress=False).stats]
    dropped = Counter()
    for stats in stages:
        dropped.update(stats.dropped)
    return stages[0].rows_in, stages[-1].kept, dropped


@pytest.fixture
def source(tmp_path):
    write_shards(str(tmp_path / "in"), shards=2, per_shard=PER_SHARD, seed=11)
    return tmp_path / "in"


@pytest.mark.parametrize("how", CUTS)
@pytest.mark.parametrize("step", STEPS)
def test_a_cut_tar_is_an_error_naming_it_and_its_shard_is_not_written(source, tmp_path, step, how):
    cut_tar(source / "00001.tar", how)
    with pytest.raises(CorruptTarError, match="in/00001.tar: "):
        run_step(step, source, tmp_path / "out")
    assert not [p.name for p in (tmp_path / "out").rglob("00001*")]


@pytest.mark.parametrize("step", STEPS)
def test_a_success_row_without_its_sample_is_counted_as_missing_image(source, tmp_path, step):
    drop_sample(source / "00001.tar", "000010002")
    rows_in, kept, dropped = run_step(step, source, tmp_path / "out")
    assert rows_in == 2 * PER_SHARD  # from the sidecars, not from the tars
    assert dropped[MISSING_IMAGE] == 1 and rows_in == kept + sum(dropped.values())
    removed = pq.read_table(tmp_path / "out" / "00001_removed.parquet").to_pylist()
    assert [row["drop_reason"] for row in removed if row["key"] == "000010002"] == [MISSING_IMAGE]
    written = sum(pq.read_metadata(tmp_path / "out" / f"{name}.parquet").num_rows for name in ("00000", "00001"))
    assert written == kept


@pytest.mark.parametrize("step", STEPS)
def test_a_shard_without_its_tar_is_refused_not_skipped(source, tmp_path, step):
    (source / "00001.tar").unlink()
    with pytest.raises(UserError, match=r"in/00001.parquet: no tar beside it \(00001.tar\); 1 of 2 shard"):
        run_step(step, source, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.tar"))


@pytest.mark.parametrize("step", STEPS)
def test_a_folder_without_shards_is_a_clear_error(tmp_path, step):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no parquet shards found"):
        run_step(step, tmp_path / "empty", tmp_path / "out")
