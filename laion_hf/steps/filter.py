"""The filter step: CLIP-filter image shards and save the kept samples' embeddings.

:func:`filter_shards` runs :class:`~laion_hf.stages.embed.ClipEmbed` and
:class:`~laion_hf.stages.filter.SimilarityFilter` over img2dataset-layout
shards through a runner: kept samples are written with their original bytes,
key and caption plus ``similarity``; removed rows go to
``NNNNN_removed.parquet`` with their reason; embeddings of the kept samples are
saved as clip-retrieval does (``img_emb/img_emb_NNNNN.npy``,
``text_emb/text_emb_NNNNN.npy`` fp16, ``metadata/metadata_NNNNN.parquet`` in the
same order), for kNN indices and near-duplicate detection.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from laion_hf.core.stage import Stage, StageStats
from laion_hf.io.embeddings import EmbeddingDropper, EmbeddingWriter, write_model_record
from laion_hf.io.parquet import open_parquet
from laion_hf.io.samples import image_shards, load_shard_stages
from laion_hf.runners.base import Runner, stage_totals
from laion_hf.runners.local import LocalRunner
from laion_hf.stages.embed import (
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    OVERWRITE_HINT,
    SIMILARITY,
    ClipEmbed,
    check_not_overwriting,
)
from laion_hf.stages.filter import READ_BATCHES, SimilarityFilter, choose_thresholds
from laion_hf.stages.language import LanguageStage
from laion_hf.steps.registry import Context, ImagePass
from laion_hf.steps.specs import FilterSpec, model_weights


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
    runner: Runner | None = None,
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
    image-decoding threads. Shards are ``runner``'s units (default: the local
    runner, which runs model passes in this process so that one model owns the
    cores; a :class:`~laion_hf.runners.ray.RayRunner` spreads them over a cluster).
    """
    from laion_hf.models.clip import resolve_weights

    shards = image_shards(input_dir)
    if not overwrite:
        for shard in shards:
            check_not_overwriting(open_parquet(shard.parquet).schema_arrow.names, similarity_column, shard.parquet, OVERWRITE_HINT)
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
    runner = runner or LocalRunner(batch_size=read_batch_size or batch_size * READ_BATCHES, show_progress=show_progress)
    results = runner.map_stages(shards, stages, output_dir, sidecar=EmbeddingWriter if save_embeddings else EmbeddingDropper,
                                uses_model=True, description="clip filter")
    if save_embeddings:
        record_embedding_model(output_dir, model=model, pretrained=pretrained, cache_dir=cache_dir)
    per_shard = {name: load_shard_stages(recorded) for name, recorded in results.items()}
    totals = stage_totals(results, [stage.name for stage in stages])
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



def work(spec: FilterSpec, context: Context) -> ImagePass:
    """The recipe's filter pass: its language selection (LAION-400M: English), CLIP embeddings and threshold.

    It shares its read with the score pass when the score heads read the same CLIP (``fuse``).
    """
    stages: list[Stage] = []
    if spec.languages is not None:
        stages.append(LanguageStage(language_in=spec.languages, reason="language"))
    multilingual: str | None = None
    if spec.multilingual_model is not None:
        text = context.models[spec.multilingual_model]
        local = model_weights(context.models, spec.multilingual_model, context.recipe_path)
        if local is not None and Path(local).exists():
            multilingual = local
        else:  # a Hub id: organisation (written as ``pretrained``) / name
            multilingual = f"{text.pretrained}/{text.name}" if text.pretrained else text.name
    embed = ClipEmbed(context.models[spec.model].name, pretrained=model_weights(context.models, spec.model, context.recipe_path),
                      multilingual=multilingual, batch_size=spec.batch_size)
    multilingual_threshold = spec.multilingual_threshold.value if spec.multilingual_threshold else None
    stages += [embed, SimilarityFilter(spec.threshold.value, multilingual_threshold)]
    record = functools.partial(record_embedding_model, model=embed.model_name, pretrained=embed.pretrained)
    return ImagePass(stages, sidecar=EmbeddingWriter, uses_model=True, fuse=f"clip:{spec.model}", after=record)


def record_embedding_model(output_dir: str, *, model: str, pretrained: str | None, cache_dir: str | None = None) -> None:
    """``embedding_model.json`` beside the embeddings: the CLIP name, its weights and their sha256 (no model is loaded)."""
    from laion_hf.models.clip import file_sha256, resolve_weights

    weights = resolve_weights(model, pretrained, cache_dir)
    checksums = {weights.file: file_sha256(weights.file)} if weights.file else {}
    write_model_record(output_dir, {"name": model, "pretrained": weights.tag or weights.file, "checksums": checksums})
