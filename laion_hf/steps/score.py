"""The score step: punsafe / pwatermark / aesthetic columns for every sample of a folder of image shards.

:func:`score_shards` locates and loads every model a shard needs before
anything is written, then runs :class:`~laion_hf.stages.score.ScoreStage` (and
optional limits) over the shards through a runner; scores the input already
has are kept unless asked (see the stage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from laion_hf.core.errors import UserError
from laion_hf.core.stage import Stage
from laion_hf.io.parquet import open_parquet
from laion_hf.io.samples import image_shards
from laion_hf.models.clip import DEFAULT_WEIGHTS
from laion_hf.runners.base import Runner, stage_totals
from laion_hf.runners.local import LocalRunner
from laion_hf.stages.score import (
    COMPUTED,
    DEFAULT_CLIP,
    EMBEDDING_SCORES,
    KEPT,
    LAION,
    SCORE_COLUMNS,
    NsfwTagStage,
    ScoreStage,
    ThresholdStage,
)
from laion_hf.steps.registry import Context, ImagePass
from laion_hf.steps.specs import ScoreSpec, head_weights, model_weights


def score_shards(
    input_dir: str,
    output_dir: str,
    *,
    nsfw: str | None = LAION,
    aesthetic: str | None = LAION,
    watermark: str | None = LAION,
    clip: str = DEFAULT_CLIP,
    clip_pretrained: str | None = DEFAULT_WEIGHTS,
    overwrite: bool = False,
    columns: Mapping[str, str] | None = None,
    models_dir: str | None = None,
    cache_dir: str | None = None,
    drop_above: Mapping[str, float] | None = None,
    drop_below: Mapping[str, float] | None = None,
    batch_size: int = 256,
    workers: int = 1,
    show_progress: bool = True,
    runner: Runner | None = None,
) -> dict[str, Any]:
    """Score every img2dataset-layout shard of ``input_dir`` into ``output_dir`` (resumable per shard).

    Before anything is written, every model a shard needs is located and loaded
    (LAION's heads and ViT-L/14 by default), and a missing or unreadable one
    stops the run with a message saying which file and how to supply it. Returns ``{"shards": n, "stages": [merged
    StageStats dicts], "columns": {score: {"column": name, "computed": shards,
    "kept": shards}}, "output_dir": ...}``: which scores were computed and
    which the input already had and kept. Shards are ``runner``'s units
    (default: a local runner with ``workers`` processes).
    """
    shards = image_shards(input_dir)
    score = ScoreStage(nsfw=nsfw, aesthetic=aesthetic, watermark=watermark, clip=clip, clip_pretrained=clip_pretrained,
                       overwrite=overwrite, columns=dict(columns or {}), models_dir=models_dir, cache_dir=cache_dir)
    unknown = set(score.columns) - set(SCORE_COLUMNS)
    if unknown:
        raise UserError(f"output column for {', '.join(sorted(unknown))}: not a score ({', '.join(SCORE_COLUMNS)})")
    plans = [score.plan(open_parquet(shard.parquet).schema_arrow.names) for shard in shards]
    computed = [name for name in score.specs() if any(plan[name] == COMPUTED for plan in plans)]
    score.head_paths(computed)  # every checkpoint located (or a clear error) before any model loads ...
    if set(computed) & set(EMBEDDING_SCORES):
        from laion_hf.models.clip import resolve_weights

        resolve_weights(clip, clip_pretrained, cache_dir)
    score.load(computed)  # ... and read before any output is written
    stages: list[Stage] = [score]
    if drop_above or drop_below:
        stages.append(ThresholdStage(dict(drop_above or {}), dict(drop_below or {})))
    runner = runner or LocalRunner(workers=workers, batch_size=batch_size, show_progress=show_progress,
                                   model_workers=workers)
    results = runner.map_stages(shards, stages, output_dir, uses_model=True, description="score")
    totals = stage_totals(results, [stage.name for stage in stages])
    summary = {
        name: {"column": score.output_column(name), COMPUTED: 0, KEPT: 0} for name in score.specs()
    }
    for plan in plans:
        for name, what in plan.items():
            summary[name][what] += 1
    return {"shards": len(results), "stages": [t.to_dict() for t in totals], "columns": summary, "output_dir": output_dir}


def work(spec: ScoreSpec, context: Context) -> ImagePass:
    """The recipe's score pass: heads on its CLIP's image embeddings, limits, and LAION-400M's NSFW tag.

    After a filter on the same CLIP it runs in the filter's pass and reuses its embeddings (``fuse``).
    """
    heads = {column: head_weights(context.models, ref, context.recipe_path) for column, ref in spec.heads.items()}
    stages: list[Stage] = [
        ScoreStage(
            nsfw=heads.get("punsafe"),
            aesthetic=heads.get("aesthetic"),
            watermark=heads.get("pwatermark"),
            clip=context.models[spec.clip].name,
            clip_pretrained=model_weights(context.models, spec.clip, context.recipe_path),
            batch_size=spec.batch_size,
        )
    ]
    if spec.drop_above:
        stages.append(ThresholdStage(drop_above=dict(spec.drop_above)))
    if spec.nsfw_tag is not None:
        stages.append(NsfwTagStage(spec.nsfw_tag.unsure_at, spec.nsfw_tag.nsfw_at))
    return ImagePass(stages, uses_model=True, fuse=f"clip:{spec.clip}")
