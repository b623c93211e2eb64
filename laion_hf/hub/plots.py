"""Distribution plots and a data profile for the card, streamed from parquet columns.

Two passes over only the columns that are plotted or counted, batch by batch,
so memory does not grow with the dataset: :func:`profile` finds each score
column's range and counts languages and per-row licences; :func:`histograms`
fills fixed-width bins over that range. The plotted range is the data's,
widened to take in the thresholds the reports name, which are drawn as lines:
a card that says "kept at >= 0.7154" shows where 0.7154 falls among the
values. Only successful rows count (img2dataset sidecars also list failed
downloads). PNGs go to ``assets/`` and are linked from the card.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laion_hf.core.schema import resolve_columns
from laion_hf.hub.evidence import Threshold

#: canonical score column -> axis title
NUMERIC = {
    "similarity": "CLIP image-text similarity",
    "punsafe": "punsafe (NSFW probability)",
    "pwatermark": "pwatermark (watermark probability)",
    "aesthetic": "aesthetic score",
}
COUNTED = ("language", "license")
BINS = 50
TOP_LANGUAGES = 20
BATCH_ROWS = 65536
UNKNOWN = "(none)"  # a row without a language (none detected) or licence
THRESHOLD_COLOURS = ("#c44e52", "#8172b3", "#dd8452", "#937860", "#da8bc3")
#: A histogram whose tallest bar is this many times its smallest non-empty one gets a log count axis,
#: so that a tail (punsafe's few high scores) stays visible beside the bulk.
LOG_SCALE_RATIO = 20


@dataclass(frozen=True)
class Plot:
    """A saved plot: title, path relative to the repo folder, the x range drawn and the thresholds on it."""

    title: str
    path: str
    value_range: tuple[float, float] | None = None
    thresholds: tuple[Threshold, ...] = ()


@dataclass
class Profile:
    """What one pass over a config's successful rows found: value ranges, language and licence counts."""

    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # finite values per score column
    languages: Counter[str] = field(default_factory=Counter)
    licenses: Counter[str] = field(default_factory=Counter)

    def merge_range(self, column: str, values: np.ndarray) -> None:
        if values.size:
            low, high = float(values.min()), float(values.max())
            old = self.ranges.get(column, (low, high))
            self.ranges[column] = (min(old[0], low), max(old[1], high))
            self.counts[column] = self.counts.get(column, 0) + int(values.size)


def _successful_batches(paths: Iterable[str], wanted: Sequence[str]) -> Iterator[tuple[dict[str, str], pa.RecordBatch]]:
    """(canonical -> actual column, batch) for every batch of the wanted columns, successful rows only."""
    for path in paths:
        parquet = pq.ParquetFile(path)
        resolved = resolve_columns(parquet.schema_arrow.names, [*wanted, "status"])
        status = resolved.pop("status")
        present = {canonical: actual for canonical, actual in resolved.items() if actual}
        if not present:
            continue
        columns = list(present.values()) + ([status] if status else [])
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            if status:
                batch = batch.filter(pc.equal(batch.column(status), "success"))
            yield present, batch


def _finite(column: pa.Array) -> np.ndarray:
    values = column.to_numpy(zero_copy_only=False).astype("float64")
    return values[np.isfinite(values)]


def _count_values(counter: Counter[str], column: pa.Array) -> None:
    for entry in pc.value_counts(column).to_pylist():
        counter[entry["values"] or UNKNOWN] += entry["counts"]


def profile(paths: Iterable[str]) -> Profile:
    """Pass one: score ranges, language and licence counts of the successful rows of ``paths``."""
    found = Profile()
    for present, batch in _successful_batches(paths, [*NUMERIC, *COUNTED]):
        for canonical, actual in present.items():
            if canonical == "language":
                _count_values(found.languages, batch.column(actual))
            elif canonical == "license":
                _count_values(found.licenses, batch.column(actual))
            else:
                found.merge_range(canonical, _finite(batch.column(actual)))
    return found


def plot_range(data_range: tuple[float, float], thresholds: Sequence[Threshold]) -> tuple[float, float]:
    """The data's range widened to include every threshold (never empty)."""
    low = min([data_range[0], *(t.value for t in thresholds)])
    high = max([data_range[1], *(t.value for t in thresholds)])
    if high <= low:
        pad = abs(low) * 0.01 or 0.01
        low, high = low - pad, high + pad
    return low, high


def histograms(paths: Iterable[str], ranges: dict[str, tuple[float, float]]) -> dict[str, np.ndarray]:
    """Pass two: BINS counts per score column over the given ranges (which must hold every value)."""
    counts = {column: np.zeros(BINS, dtype=np.int64) for column in ranges}
    for present, batch in _successful_batches(paths, list(ranges)):
        for canonical, actual in present.items():
            counts[canonical] += np.histogram(_finite(batch.column(actual)), bins=BINS, range=ranges[canonical])[0]
    return counts


def save_plots(
    paths: Sequence[str],
    folder: str | Path,
    *,
    config: str | None = None,
    thresholds: Sequence[Threshold] = (),
    found: Profile | None = None,
    subdir: str = "assets",
) -> list[Plot]:
    """Plot every distribution the data has into ``folder/subdir``, thresholds drawn; returns what was saved.

    ``found`` is the first pass's result when the caller already has it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = found or profile(paths)
    limits = {c: tuple(t for t in thresholds if t.column == c) for c in found.ranges}
    ranges = {c: plot_range(r, limits[c]) for c, r in found.ranges.items()}
    counts = histograms(paths, ranges)
    out = Path(folder) / subdir
    out.mkdir(parents=True, exist_ok=True)
    of_config = f"config {config}, " if config else ""
    plots: list[Plot] = []
    for column, (low, high) in ranges.items():
        title = NUMERIC[column]
        edges = np.linspace(low, high, BINS + 1)
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        ax.bar(edges[:-1], counts[column], width=(high - low) / BINS, align="edge", color="#4c72b0")
        for colour, limit in zip(cycle(THRESHOLD_COLOURS), limits[column]):
            ax.axvline(limit.value, color=colour, linestyle="--", linewidth=1.5, label=limit.label)
        if limits[column]:
            ax.legend(fontsize=8, loc="best", framealpha=0.85)
        pad = (high - low) * 0.02
        ax.set_xlim(low - pad, high + pad)
        ax.set_xlabel(title)
        nonzero = counts[column][counts[column] > 0]
        log = nonzero.size and nonzero.max() >= LOG_SCALE_RATIO * nonzero.min()
        if log:
            ax.set_yscale("log")
        ax.set_ylabel("samples (log scale)" if log else "samples")
        ax.set_title(f"{title} ({of_config}n={int(counts[column].sum()):,})")
        fig.tight_layout()
        name = f"{subdir}/{column}_histogram.png"
        fig.savefig(Path(folder) / name, dpi=100)
        plt.close(fig)
        plots.append(Plot(title, name, (low, high), limits[column]))
    if found.languages:
        top = found.languages.most_common(TOP_LANGUAGES)
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        ax.bar([code for code, _ in top], [count for _, count in top], color="#55a868")
        ax.set_ylabel("samples")
        ax.set_title(f"caption languages ({of_config}top {len(top)} of {len(found.languages)})")
        ax.tick_params(axis="x", rotation=60)
        fig.tight_layout()
        name = f"{subdir}/language_distribution.png"
        fig.savefig(Path(folder) / name, dpi=100)
        plt.close(fig)
        plots.append(Plot("language distribution", name))
    written = {Path(p.path).name for p in plots}
    for stale in [*out.glob("*_histogram.png"), *out.glob("language_distribution.png")]:
        if stale.name not in written:  # a column an earlier publish of this folder had
            stale.unlink()
    return plots
