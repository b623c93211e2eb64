"""The CLIP filter: keep image-text pairs whose cosine similarity reaches the threshold.

Thresholds as LAION ran them: LAION-400M kept OpenAI ViT-B/32 similarity
>= 0.30; LAION-5B kept English captions (ViT-B/32 text tower) >= 0.28 and
other languages (the multilingual encoder) >= 0.26. Those numbers belong to
OpenAI's ViT-B/32 weights, which are the default model; the shipped tiny model
has its own, calibrated on held-out synthetic data
(``laion_hf/models/weights/laion-hf-tiny.quality.json``). Any other weights
have no known threshold, and a run without one is refused.

:func:`filter_shards` runs :class:`~laion_hf.stages.embed.ClipEmbed` and
:class:`SimilarityFilter` over img2dataset-layout shards: kept samples are
written with their original bytes, key and caption plus ``similarity``;
removed rows go to ``NNNNN_removed.parquet`` with their reason; embeddings of
the kept samples are saved as clip-retrieval does (``img_emb/img_emb_NNNNN.npy``,
``text_emb/text_emb_NNNNN.npy`` fp16, ``metadata/metadata_NNNNN.parquet`` in the
same order), for kNN indices and near-duplicate detection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laion_hf.core.errors import UserError
from laion_hf.core.schema import resolve_columns
from laion_hf.core.stage import DROP_REASON, Stage, StageStats, alive_mask, mark_dropped
from laion_hf.io.atomic import atomic_path, join
from laion_hf.io.samples import IMAGE, IMAGE_EXT, image_shards, load_shard_stages, transform_shard
from laion_hf.io.shards import Shard
from laion_hf.runners.local import run_shards
from laion_hf.stages.embed import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    ENGLISH,
    IMAGE_EMBEDDING,
    OVERWRITE_HINT,
    SIMILARITY,
    TEXT_EMBEDDING,
    ClipEmbed,
    check_not_overwriting,
)

REASON = "clip-similarity"
#: Model batches per batch read from a shard: the first one's decoding is not hidden behind a forward pass.
READ_BATCHES = 8
LAION_400M_THRESHOLD = 0.30
#: The similarity cuts LAION published, by the weights they belong to: (architecture, who published the weights).
PUBLISHED_THRESHOLDS = {
    ("ViT-B-32", "openai"): ({"threshold": 0.28, "multilingual_threshold": 0.26}, "LAION-5B's, for OpenAI ViT-B/32"),
}


class SimilarityFilter(Stage):
    """Marks rows whose ``similarity`` is below their language's threshold (reason ``clip-similarity``).

    ``multilingual_threshold`` applies to rows whose ``language`` is not
    English (the rows the multilingual encoder embedded); None applies
    ``threshold`` to every row. Rows without a similarity (dropped earlier,
    or undecodable) are left to the reason they already have.
    """

    name = "clip-filter"

    def __init__(self, threshold: float, multilingual_threshold: float | None = None, column: str = SIMILARITY) -> None:
        self.threshold = threshold
        self.multilingual_threshold = multilingual_threshold
        self.column = column

    def __call__(self, batch: pa.Table) -> pa.Table:
        language = resolve_columns(batch.column_names, ["language"])["language"]
        limit: pa.Scalar | pa.ChunkedArray = pa.scalar(self.threshold, pa.float32())
        if self.multilingual_threshold is not None and language is not None:
            english = pc.equal(pc.utf8_lower(pc.fill_null(batch[language], "")), ENGLISH)
            limit = pc.if_else(english, limit, pa.scalar(self.multilingual_threshold, pa.float32()))
        similarity = resolve_columns(batch.column_names, [self.column])[self.column] or self.column
        below = pc.and_(pc.less(batch[similarity], limit), alive_mask(batch))
        return mark_dropped(batch, below, REASON)


class EmbeddingDropper:
    """Sidecar for ``save_embeddings=False``: the embedding columns never reach the shard's metadata."""

    def take(self, batch: pa.Table) -> pa.Table:
        return batch.drop_columns([IMAGE_EMBEDDING, TEXT_EMBEDDING])

    def close(self) -> None:
        """Nothing to write."""


class EmbeddingWriter:
    """Collects the kept rows' embeddings of one shard and writes them clip-retrieval style, atomically.

    Memory holds one shard's embeddings (rows x dim x 2 bytes x 2), which the
    shard size bounds.
    """

    def __init__(self, output_dir: str, name: str) -> None:
        self.output_dir = output_dir
        self.name = name
        self._image: list[np.ndarray] = []
        self._text: list[np.ndarray] = []
        self._metadata: list[pa.Table] = []

    def take(self, batch: pa.Table) -> pa.Table:
        """Keep the alive rows' embeddings; return the batch without the embedding columns."""
        alive = alive_mask(batch)
        kept = batch.filter(alive)
        for column, parts in ((IMAGE_EMBEDDING, self._image), (TEXT_EMBEDDING, self._text)):
            values = kept[column].combine_chunks()
            dim = values.type.list_size
            parts.append(values.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float16))
        drop = [IMAGE, IMAGE_EXT, IMAGE_EMBEDDING, TEXT_EMBEDDING, DROP_REASON]
        self._metadata.append(kept.drop_columns([c for c in drop if c in kept.column_names]))
        return batch.drop_columns([IMAGE_EMBEDDING, TEXT_EMBEDDING])

    def _save_npy(self, kind: str, parts: list[np.ndarray]) -> None:
        array = np.concatenate(parts) if parts else np.zeros((0, 0), np.float16)
        with atomic_path(join(self.output_dir, kind, f"{kind}_{self.name}.npy")) as tmp:
            with fsspec.open(tmp, "wb") as f:
                np.save(f, array)

    def close(self) -> None:
        self._save_npy("img_emb", self._image)
        self._save_npy("text_emb", self._text)
        with atomic_path(join(self.output_dir, "metadata", f"metadata_{self.name}.parquet")) as tmp:
            table = pa.concat_tables(self._metadata, promote_options="default") if self._metadata else pa.table({})
            pq.write_table(table, tmp)


def filter_shard(
    shard: Shard, output_dir: str, stages: list[Stage], batch_size: int, save_embeddings: bool
) -> dict[str, Any]:
    """Filter one shard (the unit the runner resumes); return its per-stage stats."""
    sidecar = EmbeddingWriter(output_dir, shard.name) if save_embeddings else EmbeddingDropper()
    return transform_shard(shard, output_dir, stages, batch_size, sidecar=sidecar)


@dataclass
class FilterReport:
    """What a filter run did: totals per stage, per shard, the model and its checksums.

    ``threshold_source`` says where the thresholds came from (LAION's published
    value for these weights, the tiny model's calibration, or the caller).
    ``seconds`` is the processing time (model loading excluded).
    """

    stages: list[StageStats]
    shards: dict[str, list[StageStats]]
    model: str
    pretrained: str | None
    threshold: float
    multilingual_threshold: float | None
    threshold_source: str
    similarity_column: str = SIMILARITY
    checksums: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows_in(self) -> int:
        return self.stages[0].rows_in if self.stages else 0

    @property
    def kept(self) -> int:
        return self.stages[-1].kept if self.stages else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "pretrained": self.pretrained,
            "threshold": self.threshold,
            "multilingual_threshold": self.multilingual_threshold,
            "threshold_source": self.threshold_source,
            "similarity_column": self.similarity_column,
            "checksums": self.checksums,
            "stages": [s.to_dict() for s in self.stages],
            "seconds": round(self.seconds, 3),
        }


def known_thresholds(weights) -> tuple[dict[str, float], str] | None:
    """The thresholds that belong to these weights (a ``laion_hf.models.clip.Weights``), with their source."""
    from laion_hf.models.clip import SHIPPED, TINY, tiny_thresholds

    if (weights.family, weights.origin) == (TINY, SHIPPED):
        return tiny_thresholds(), "calibrated for laion-hf-tiny on held-out synthetic data"
    return PUBLISHED_THRESHOLDS.get((weights.family, weights.origin))


def choose_thresholds(
    weights, threshold: float | None, multilingual_threshold: float | None
) -> tuple[float, float | None, str]:
    """(threshold, multilingual threshold, where they came from); a model without a known one needs ``threshold``."""
    if threshold is not None:
        return threshold, multilingual_threshold, "given"
    known = known_thresholds(weights)
    if known is None:
        raise UserError(
            f"{weights.describe()}: no published similarity threshold for these weights; pass --threshold "
            "(LAION's are for OpenAI's ViT-B/32 weights only: 0.28 English / 0.26 multilingual in LAION-5B, "
            "0.30 in LAION-400M; the demo model laion-hf-tiny has its own calibrated one)"
        )
    values, source = known
    if multilingual_threshold is None:
        multilingual_threshold = values["multilingual_threshold"]
    return values["threshold"], multilingual_threshold, source


def filter_shards(
    input_dir: str,
    output_dir: str,
    *,
    model: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    threshold: float | None = None,
    multilingual: str | bool | None = True,
    multilingual_threshold: float | None = None,
    workers: int = 2,
    batch_size: int = 256,
    read_batch_size: int | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    cache_dir: str | None = None,
    similarity_column: str = SIMILARITY,
    overwrite: bool = False,
    fast_decode: bool = False,
    save_embeddings: bool = True,
    show_progress: bool = True,
) -> FilterReport:
    """CLIP-filter every shard of ``input_dir`` into ``output_dir``; resumable per shard.

    The default model is LAION's: OpenAI's ViT-B/32 (``ViT-B-32-quickgelu`` +
    ``openai``), read from open_clip's caches or ``cache_dir``; when its weights
    are not on the machine the run stops before writing anything, saying how to
    supply them. ``threshold`` defaults to the one that belongs to the weights
    (LAION-5B's 0.28 / 0.26 for OpenAI's ViT-B/32, the calibrated one for the
    shipped tiny model); other weights need it given. ``multilingual_threshold``
    defaults to the known one, else ``threshold``. Shards that already carry a
    ``similarity_column`` are refused unless ``overwrite``. ``workers`` are
    image-decoding threads; shards run one after the other in this process so
    the model is loaded once and owns the cores (on a cluster, the same stages
    run under Ray Data).
    """
    from laion_hf.models.clip import resolve_weights

    shards = image_shards(input_dir)
    if not overwrite:
        for shard in shards:
            check_not_overwriting(_parquet_columns(shard.parquet), similarity_column, shard.parquet, OVERWRITE_HINT)
    weights = resolve_weights(model, pretrained, cache_dir)
    threshold, multilingual_threshold, source = choose_thresholds(weights, threshold, multilingual_threshold)
    if not multilingual:
        multilingual_threshold = None
    elif multilingual_threshold is None:
        multilingual_threshold = threshold
    embed = ClipEmbed(model, pretrained=pretrained, multilingual=multilingual, batch_size=batch_size,
                      workers=workers, device=device, precision=precision, cache_dir=cache_dir,
                      similarity_column=similarity_column, overwrite=overwrite, fast_decode=fast_decode)
    stages: list[Stage] = [embed, SimilarityFilter(threshold, multilingual_threshold, similarity_column)]
    embed.setup()  # load the model once, outside the timed part
    started = time.perf_counter()
    process = partial(filter_shard, output_dir=output_dir, stages=stages,
                      batch_size=read_batch_size or batch_size * READ_BATCHES, save_embeddings=save_embeddings)
    results = run_shards(shards, process, output_dir=output_dir, name_of=lambda s: s.name, workers=1,
                         description="clip filter", show_progress=show_progress)
    per_shard = {name: load_shard_stages(recorded) for name, recorded in results.items()}
    totals = [StageStats(stage.name) for stage in stages]
    for shard_stats in per_shard.values():
        for total, stats in zip(totals, shard_stats):
            total.merge(stats)
    for total in totals:
        total.check()
    return FilterReport(
        stages=totals,
        shards=per_shard,
        model=embed.clip.name,
        pretrained=weights.tag or weights.file,
        threshold=threshold,
        multilingual_threshold=multilingual_threshold,
        threshold_source=source,
        similarity_column=similarity_column,
        checksums=embed.checksums,
        seconds=time.perf_counter() - started,
    )


def _parquet_columns(path: str) -> list[str]:
    with fsspec.open(path, "rb") as f:
        return pq.read_schema(f).names
