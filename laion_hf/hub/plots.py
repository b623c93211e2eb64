"""Distribution plots for the dataset card, computed by streaming parquet columns.

Only the plotted columns are read, batch by batch, into fixed-size histograms,
so memory does not grow with the dataset. Images are PNGs saved in the repo
(``assets/``) and linked from the card.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laion_hf.schema import resolve_columns

#: canonical column -> (title, value range). Scores are in [0, 1]; aesthetic scores in [0, 10].
NUMERIC = {
    "similarity": ("CLIP image-text similarity", (0.0, 0.5)),
    "punsafe": ("punsafe (NSFW probability)", (0.0, 1.0)),
    "pwatermark": ("pwatermark (watermark probability)", (0.0, 1.0)),
    "aesthetic": ("aesthetic score", (0.0, 10.0)),
}
BINS = 50
TOP_LANGUAGES = 20


@dataclass(frozen=True)
class Plot:
    """A saved plot: title and path relative to the repo folder."""

    title: str
    path: str


def collect(parquet_paths: Iterable[str]) -> tuple[dict[str, np.ndarray], Counter[str]]:
    """Histograms of the numeric columns present and the language counts, over all files (successful rows)."""
    histograms: dict[str, np.ndarray] = {}
    languages: Counter[str] = Counter()
    for path in parquet_paths:
        parquet = pq.ParquetFile(path)
        resolved = resolve_columns(parquet.schema_arrow.names, [*NUMERIC, "language", "status"])
        status = resolved.pop("status")
        present = {canonical: actual for canonical, actual in resolved.items() if actual}
        if not present:
            continue
        columns = list(present.values()) + ([status] if status else [])
        for batch in parquet.iter_batches(batch_size=65536, columns=columns):
            if status:  # img2dataset sidecars list failed downloads too; plot what was published
                batch = batch.filter(pc.equal(batch.column(status), "success"))
            for canonical, actual in present.items():
                column = batch.column(actual)
                if canonical == "language":
                    languages.update(v if v else "unknown" for v in column.to_pylist())
                    continue
                values = column.to_numpy(zero_copy_only=False).astype("float64")
                values = values[~np.isnan(values)]
                low, high = NUMERIC[canonical][1]
                counts, _ = np.histogram(np.clip(values, low, high), bins=BINS, range=(low, high))
                histograms[canonical] = histograms.get(canonical, 0) + counts
    return histograms, languages


def save_plots(parquet_paths: Iterable[str], folder: str | Path, subdir: str = "assets") -> list[Plot]:
    """Plot every distribution the data has into ``folder/subdir``; returns what was saved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histograms, languages = collect(parquet_paths)
    out = Path(folder) / subdir
    out.mkdir(parents=True, exist_ok=True)
    plots: list[Plot] = []
    for canonical, counts in histograms.items():
        title, (low, high) = NUMERIC[canonical]
        edges = np.linspace(low, high, BINS + 1)
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.bar(edges[:-1], counts, width=(high - low) / BINS, align="edge", color="#4c72b0")
        ax.set_xlabel(title)
        ax.set_ylabel("samples")
        ax.set_title(f"{title} (n={int(counts.sum()):,})")
        fig.tight_layout()
        name = f"{subdir}/{canonical}_histogram.png"
        fig.savefig(Path(folder) / name, dpi=100)
        plt.close(fig)
        plots.append(Plot(title, name))
    if languages:
        top = languages.most_common(TOP_LANGUAGES)
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.bar([code for code, _ in top], [count for _, count in top], color="#55a868")
        ax.set_ylabel("samples")
        ax.set_title(f"languages (top {len(top)} of {len(languages)})")
        ax.tick_params(axis="x", rotation=60)
        fig.tight_layout()
        name = f"{subdir}/language_distribution.png"
        fig.savefig(Path(folder) / name, dpi=100)
        plt.close(fig)
        plots.append(Plot("language distribution", name))
    return plots
