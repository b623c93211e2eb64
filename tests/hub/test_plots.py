"""Plots: ranges from the data (two streamed passes), thresholds drawn, successful rows only; looked at on real pairs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from laion_hf.hub import plots
from laion_hf.hub.evidence import Threshold
from laion_hf.hub.plots import BINS, histograms, profile, save_plots

#: The demo's research config: 92 similarities between 0.74 and 0.98, kept at the tiny CLIP's calibrated 0.7154.
DEMO_SIMILARITIES = np.linspace(0.7402, 0.9801, 92)
FILTER = Threshold("similarity", 0.7154, "filter", keeps=True)


def write_scores(path, similarity, status=None, punsafe=None):
    columns = {"similarity": pa.array(similarity, pa.float32())}
    if status is not None:
        columns["status"] = pa.array(status)
    if punsafe is not None:
        columns["punsafe"] = pa.array(punsafe, pa.float32())
    pq.write_table(pa.table(columns), path)
    return str(path)


def colour_pixels(png, hex_colour: str, tolerance: int = 12) -> int:
    """Pixels of the rendered PNG within ``tolerance`` of a colour (how a drawn line shows up)."""
    target = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(pixels - target).max(axis=-1) <= tolerance).sum())


def test_similarity_range_comes_from_the_data_and_takes_in_the_threshold(tmp_path):
    path = write_scores(tmp_path / "a.parquet", DEMO_SIMILARITIES)
    saved = save_plots([path], tmp_path, config="research", thresholds=[FILTER])
    (plot,) = saved
    low, high = plot.value_range
    assert low == pytest.approx(0.7154) and high == pytest.approx(0.9801, abs=1e-6)
    counts = histograms([path], {"similarity": plot.value_range})["similarity"]
    assert counts.sum() == 92 and np.count_nonzero(counts) >= 40  # spread over the bars, not all in the last one
    assert counts[0] == 0  # the threshold sits left of every kept value
    assert plot.thresholds == (FILTER,)
    assert colour_pixels(tmp_path / plot.path, plots.THRESHOLD_COLOURS[0]) > 100  # the threshold line is drawn


def test_two_passes_in_small_batches_equal_one_pass_over_all_values(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    parts = [rng.beta(2, 5, size) for size in (700, 1, 333)]
    paths = [write_scores(tmp_path / f"{i}.parquet", part) for i, part in enumerate(parts)]
    monkeypatch.setattr(plots, "BATCH_ROWS", 64)  # memory per batch, whatever the file size
    found = profile(paths)
    values = np.concatenate(parts).astype(np.float32).astype(np.float64)
    assert found.ranges["similarity"] == (values.min(), values.max()) and found.counts["similarity"] == 1034
    streamed = histograms(paths, found.ranges)["similarity"]
    assert streamed.tolist() == np.histogram(values, bins=BINS, range=found.ranges["similarity"])[0].tolist()


def test_only_successful_rows_count_and_nulls_are_skipped(tmp_path):
    path = write_scores(
        tmp_path / "s.parquet", [0.3, 0.9, None, 0.5], status=["success", "failed_to_download", "success", "success"], punsafe=[0.1, 0.99, 0.2, None]
    )
    found = profile([path])
    assert found.ranges == {"similarity": (pytest.approx(0.3), pytest.approx(0.5)), "punsafe": (pytest.approx(0.1), pytest.approx(0.2))}
    assert found.counts == {"similarity": 2, "punsafe": 2}


def test_one_value_still_makes_a_range_and_stale_plots_of_this_folder_go(tmp_path):
    path = write_scores(tmp_path / "one.parquet", [0.5], punsafe=[0.2])
    assert {p.path for p in save_plots([path], tmp_path / "hub")} == {"assets/similarity_histogram.png", "assets/punsafe_histogram.png"}
    path = write_scores(tmp_path / "one.parquet", [0.5])
    (plot,) = save_plots([path], tmp_path / "hub")
    assert plot.value_range == (pytest.approx(0.495), pytest.approx(0.505))
    assert sorted(p.name for p in (tmp_path / "hub" / "assets").iterdir()) == ["similarity_histogram.png"]


def test_real_pairs_plot_their_caption_languages(real_download, tmp_path):
    paths = sorted(str(p) for p in real_download.glob("*.parquet"))
    rows = [r for p in paths for r in pq.read_table(p).to_pylist() if r["status"] == "success"]
    found = profile(paths)
    assert found.languages == Counter(r["language"] or "(none)" for r in rows) and sum(found.languages.values()) == 39
    assert found.ranges == {}  # a raw download has no scores: nothing made up
    saved = save_plots(paths, tmp_path, config="default")
    assert [p.path for p in saved] == ["assets/language_distribution.png"]
    assert Image.open(tmp_path / saved[0].path).size == (640, 340)
