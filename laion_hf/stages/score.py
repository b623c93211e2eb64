"""Score stage: LAION's ``punsafe``, ``pwatermark`` and ``aesthetic`` columns for every alive row.

Scores never drop rows: LAION published them as columns and each release drew
its own line (LAION-Aesthetics kept aesthetic > 7 with punsafe < 0.5 and
pwatermark < 0.8; Re-LAION-5B research-safe removed punsafe > 0.45). Drawing
the line is :class:`ThresholdStage`'s job, driven by the recipe.

- ``punsafe`` and ``aesthetic`` are heads on the L2-normalised CLIP image
  embedding. If an earlier stage left it in the batch (``image_embedding``,
  as :class:`laion_hf.stages.embed.ClipEmbed` does) it is reused; otherwise the stage runs the CLIP
  image tower on the decoded pixels itself.
- ``pwatermark`` is an image model on the decoded pixels.

Models load once per worker (on first use when a runner does not call
:meth:`ScoreStage.setup`) and are not pickled with the stage, so the same
object runs under the local runner and Ray Data.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from laion_hf.errors import UserError
from laion_hf.io.samples import IMAGE, image_shards, transform_shard
from laion_hf.io.shards import Shard
from laion_hf.models import heads
from laion_hf.models.clip import TINY, WEIGHTS_DIR
from laion_hf.runners.local import run_shards
from laion_hf.stages.base import Stage, StageStats, alive_mask, mark_dropped
from laion_hf.stages.embed import DECODE_ERROR, IMAGE_EMBEDDING

EMBEDDING_COLUMN = IMAGE_EMBEDDING  # what ClipEmbed leaves in the batch
SCORE_COLUMNS = ("punsafe", "pwatermark", "aesthetic")
HEADS_DIR = WEIGHTS_DIR / "heads"
TINY_HEADS = {
    "nsfw": HEADS_DIR / "tiny-nsfw.safetensors",
    "aesthetic": HEADS_DIR / "tiny-aesthetic.safetensors",
    "watermark": HEADS_DIR / "tiny-watermark.safetensors",
}
UNDECODABLE = DECODE_ERROR  # the same reason ClipEmbed uses, so counts add up across stages


def load_nsfw(spec: str) -> heads.NsfwDetector:
    """``tiny``, LAION's autokeras SavedModel (directory or zip), or a head saved as safetensors."""
    path = _head_path("nsfw", spec)
    if path.is_dir() or path.suffix == ".zip":
        from laion_hf.models.tf_savedmodel import load_nsfw_savedmodel

        return load_nsfw_savedmodel(path)
    return _expect(heads.load_head(path), heads.NsfwDetector, path)


def load_aesthetic(spec: str) -> heads.AestheticV1 | heads.AestheticV2:
    """``tiny``, LAION's v1 (``Linear``) or v2 (MLP) ``.pth`` state dict, or a head saved as safetensors."""
    path = _head_path("aesthetic", spec)
    if path.suffix in (".pth", ".pt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        return heads.load_aesthetic_v1(path) if "weight" in state else heads.load_aesthetic_v2(path)
    return _expect(heads.load_head(path), (heads.AestheticV1, heads.AestheticV2), path)


def load_watermark(spec: str) -> heads.WatermarkDetector:
    """``tiny``, LAION's ``watermark_model_v1.pt`` (efficientnet_b3a state dict), or safetensors."""
    path = _head_path("watermark", spec)
    if path.suffix in (".pth", ".pt"):
        return heads.load_watermark(path)
    return _expect(heads.load_head(path), heads.WatermarkDetector, path)


def _head_path(kind: str, spec: str) -> Path:
    path = TINY_HEADS[kind] if spec == "tiny" else Path(spec)
    if not path.exists():
        hint = " (train with python -m laion_hf.models.train_heads)" if spec == "tiny" else ""
        raise heads.CheckpointError(f"{path}: {kind} checkpoint not found{hint}")
    return path


def _expect(head, kinds, path: Path):
    if not isinstance(head, kinds):
        raise heads.CheckpointError(f"{path}: holds a {type(head).__name__}, not the head asked for")
    return head


def embeddings_from_column(column: pa.ChunkedArray | pa.Array, rows: np.ndarray, source: str) -> np.ndarray:
    """Rows ``rows`` of a list-of-floats column as a float32 ``[len(rows), dim]`` matrix."""
    values = column.take(pa.array(rows, pa.int64())) if len(rows) else column.slice(0, 0)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.null_count:
        raise UserError(f"{source}: {EMBEDDING_COLUMN} is null for an alive row")
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise UserError(f"{source}: {EMBEDDING_COLUMN} rows differ in length")
    flat = pc.list_flatten(values).to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(rows), int(lengths[0]) if len(lengths) else 0)


def _decode(data: bytes) -> Image.Image | None:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


@dataclass
class _Models:
    nsfw: heads.NsfwDetector | None
    aesthetic: torch.nn.Module | None
    watermark: heads.WatermarkDetector | None
    clip: Any = None  # laion_hf.models.clip.ClipModel, loaded when a batch carries no embeddings


@dataclass
class ScoreStage(Stage):
    """Add float32 ``punsafe`` / ``pwatermark`` / ``aesthetic`` for alive rows (null for dropped ones).

    Each head is a spec (see :func:`load_nsfw`, :func:`load_aesthetic`,
    :func:`load_watermark`) or None to skip that column. An image that cannot be
    decoded cannot be scored: its row is marked ``image-decode-error`` (counted,
    never silently lost). A score column the input already has (LAION metadata)
    is overwritten for the rows scored here and kept for the others.
    """

    nsfw: str | None = "tiny"
    aesthetic: str | None = "tiny"
    watermark: str | None = "tiny"
    clip: str = TINY
    clip_pretrained: str | None = None
    batch_size: int = 64
    name: str = "score"
    _models: _Models | None = field(default=None, init=False, repr=False, compare=False)

    def setup(self) -> None:
        if self._models is None:
            self._models = _Models(
                nsfw=load_nsfw(self.nsfw) if self.nsfw else None,
                aesthetic=load_aesthetic(self.aesthetic) if self.aesthetic else None,
                watermark=load_watermark(self.watermark) if self.watermark else None,
            )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_models"] = None  # workers load their own copy in setup()
        return state

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.setup()
        models = self._models
        rows = np.flatnonzero(np.asarray(alive_mask(batch), dtype=bool))
        needs_embedding = models.nsfw is not None or models.aesthetic is not None
        has_embedding = EMBEDDING_COLUMN in batch.column_names
        images: list[Image.Image | None] = []
        if models.watermark is not None or (needs_embedding and not has_embedding):
            if IMAGE not in batch.column_names:
                raise UserError(f"stage {self.name}: scoring needs the images (an {IMAGE} column) or {EMBEDDING_COLUMN}")
            images = [_decode(data) for data in batch[IMAGE].take(pa.array(rows, pa.int64())).to_pylist()]
            undecodable = np.array([image is None for image in images], dtype=bool)
            if undecodable.any():
                mask = np.zeros(batch.num_rows, dtype=bool)
                mask[rows[undecodable]] = True
                batch = mark_dropped(batch, pa.array(mask), UNDECODABLE)
                images = [image for image in images if image is not None]
                rows = rows[~undecodable]

        scores: dict[str, np.ndarray] = {}
        if needs_embedding:
            embeddings = self._embeddings(batch, rows, images, has_embedding)
            with torch.no_grad():
                if models.nsfw is not None:
                    scores["punsafe"] = self._batched(models.nsfw, embeddings, "nsfw")
                if models.aesthetic is not None:
                    scores["aesthetic"] = self._batched(models.aesthetic, embeddings, "aesthetic")
        if models.watermark is not None:
            scores["pwatermark"] = self._pwatermark(images)
        for column, values in scores.items():
            batch = _set_scores(batch, column, rows, values)
        return batch

    def _embeddings(self, batch: pa.Table, rows: np.ndarray, images: list, has_embedding: bool) -> torch.Tensor:
        """The image embeddings as float16 values (in float32), exactly as LAION stored and scored them.

        Exactness matters: the NSFW detector looks some columns up by their
        ``"%f"`` string, and its vocabularies hold float16 values. So a column
        is used as it is (not re-normalised), and a freshly computed embedding
        is rounded to float16 like ClipEmbed's column, so both paths agree.
        """
        if has_embedding:
            return torch.from_numpy(embeddings_from_column(batch[EMBEDDING_COLUMN], rows, f"stage {self.name}"))
        if self._models.clip is None:
            from laion_hf.models.clip import load_clip

            self._models.clip = load_clip(self.clip, pretrained=self.clip_pretrained)
        clip = self._models.clip
        chunks = [
            clip.encode_images(torch.stack([clip.preprocess(im) for im in images[i : i + self.batch_size]]))
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(chunks).half().float() if chunks else torch.zeros(0, 1)

    def _batched(self, head: torch.nn.Module, embeddings: torch.Tensor, kind: str) -> np.ndarray:
        if len(embeddings) == 0:
            return np.zeros(0, np.float32)
        dim = head.embed_dim
        if embeddings.shape[1] != dim:
            raise UserError(
                f"stage {self.name}: the {kind} head takes {dim}-d CLIP embeddings but the images' are "
                f"{embeddings.shape[1]}-d (use the CLIP the head was trained on)"
            )
        return torch.cat([head(chunk) for chunk in embeddings.split(self.batch_size)]).numpy().astype(np.float32)

    @torch.no_grad()
    def _pwatermark(self, images: list[Image.Image]) -> np.ndarray:
        detector = self._models.watermark
        out = [
            detector.pwatermark(detector.preprocess(images[i : i + self.batch_size]))
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)


def _set_scores(batch: pa.Table, column: str, rows: np.ndarray, values: np.ndarray) -> pa.Table:
    """Write ``values`` at ``rows`` of a float32 column; other rows keep an existing value or stay null."""
    filled = np.full(batch.num_rows, np.nan, dtype=np.float32)
    filled[rows] = values
    scored = np.zeros(batch.num_rows, dtype=bool)
    scored[rows] = True
    if column in batch.column_names:
        previous = pc.cast(batch[column], pa.float32())
        merged = pc.if_else(pa.array(scored), pa.array(filled), previous)
        return batch.set_column(batch.column_names.index(column), column, merged)
    return batch.append_column(column, pa.array(filled, mask=~scored))


@dataclass
class ThresholdStage(Stage):
    """Mark rows whose score crosses a limit, with reasons like ``punsafe>0.45`` or ``aesthetic<5``.

    ``drop_above``: column -> limit, drops ``value > limit`` (Re-LAION's
    "punsafe removed strictly above"). ``drop_below``: drops ``value < limit``.
    A null score (a row not scored) never crosses a limit.
    """

    drop_above: Mapping[str, float] = field(default_factory=dict)
    drop_below: Mapping[str, float] = field(default_factory=dict)
    name: str = "thresholds"

    def __call__(self, batch: pa.Table) -> pa.Table:
        for limits, compare, symbol in ((self.drop_above, pc.greater, ">"), (self.drop_below, pc.less, "<")):
            for column, limit in limits.items():
                if column not in batch.column_names:
                    raise UserError(
                        f"stage {self.name}: no {column} column to limit (has: {', '.join(batch.column_names)})"
                    )
                batch = mark_dropped(batch, compare(batch[column], limit), f"{column}{symbol}{limit:g}")
        return batch


def _shard_name(shard: Shard) -> str:
    return shard.name


def score_shards(
    input_dir: str,
    output_dir: str,
    *,
    nsfw: str | None = "tiny",
    aesthetic: str | None = "tiny",
    watermark: str | None = "tiny",
    clip: str = TINY,
    clip_pretrained: str | None = None,
    drop_above: Mapping[str, float] | None = None,
    drop_below: Mapping[str, float] | None = None,
    batch_size: int = 256,
    workers: int = 1,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Score every img2dataset-layout shard of ``input_dir`` into ``output_dir`` (resumable per shard).

    Returns ``{"shards": n, "stages": [merged StageStats dicts], "output_dir": ...}``.
    """
    shards = image_shards(input_dir)
    stages: list[Stage] = [ScoreStage(nsfw, aesthetic, watermark, clip, clip_pretrained)]
    if drop_above or drop_below:
        stages.append(ThresholdStage(dict(drop_above or {}), dict(drop_below or {})))
    results = run_shards(
        shards,
        partial(transform_shard, output_dir=output_dir, stages=stages, batch_size=batch_size),
        output_dir=output_dir,
        name_of=_shard_name,
        workers=workers,
        description="score",
        show_progress=show_progress,
    )
    totals = [StageStats(stage.name) for stage in stages]
    for recorded in results.values():
        for total, stats in zip(totals, recorded["stages"]):
            total.merge(StageStats.from_dict(stats))
    return {"shards": len(results), "stages": [t.to_dict() for t in totals], "output_dir": output_dir}
