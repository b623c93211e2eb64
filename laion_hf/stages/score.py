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

By default the stage computes what LAION computed: LAION's published heads
(found under their published names in the models folder, see
:func:`laion_hf.models.heads.published_checkpoint`) on OpenAI's ViT-L/14
embeddings; the shipped tiny heads are for the synthetic domain and are used
only when named (``"tiny"``). A score column the input already has (LAION's
joined metadata carries ``punsafe`` and ``pwatermark``) is kept as it is, and
its head is not even loaded, unless ``overwrite``; ``columns`` writes a score
under another name instead. :meth:`ScoreStage.plan` says which columns a given
input gets computed and which it keeps, for the run's report.

Models load once per worker, on first need, and are not pickled with the
stage, so the same object runs under the local runner and on Ray actors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from laion_hf.core.errors import UserError
from laion_hf.core.schema import resolve_columns
from laion_hf.core.stage import Stage, alive_mask, mark_dropped
from laion_hf.io.samples import IMAGE
from laion_hf.models import heads
from laion_hf.models.checkpoints import read_tensors
from laion_hf.models.clip import DEFAULT_WEIGHTS, QUICKGELU, WEIGHTS_DIR
from laion_hf.models.images import decode_image
from laion_hf.stages.embed import DECODE_ERROR, IMAGE_EMBEDDING

EMBEDDING_COLUMN = IMAGE_EMBEDDING  # what ClipEmbed leaves in the batch
SCORE_COLUMNS = ("punsafe", "pwatermark", "aesthetic")
HEAD_OF = {"punsafe": "nsfw", "pwatermark": "watermark", "aesthetic": "aesthetic"}  # score column -> head kind
EMBEDDING_SCORES = ("punsafe", "aesthetic")
LAION = "laion"  # head spec: LAION's published checkpoint
TINY_HEAD = "tiny"  # head spec: the shipped head of the synthetic domain
DEFAULT_CLIP = "ViT-L-14-quickgelu"  # LAION's punsafe and aesthetic heads read OpenAI ViT-L/14 embeddings
COMPUTED, KEPT = "computed", "kept"
HEADS_DIR = WEIGHTS_DIR / "heads"
TINY_HEADS = {
    "nsfw": HEADS_DIR / "tiny-nsfw.safetensors",
    "aesthetic": HEADS_DIR / "tiny-aesthetic.safetensors",
    "watermark": HEADS_DIR / "tiny-watermark.safetensors",
}
UNDECODABLE = DECODE_ERROR  # the same reason ClipEmbed uses, so counts add up across stages


def head_path(kind: str, spec: str, clip: str = DEFAULT_CLIP, models_dir: str | None = None) -> Path:
    """The checkpoint a head spec names: ``laion`` (LAION's, for ``clip``'s embeddings), ``tiny``, or a path."""
    if spec == LAION:
        return heads.published_checkpoint(kind, clip.removesuffix(QUICKGELU), models_dir)
    path = TINY_HEADS[kind] if spec == TINY_HEAD else Path(spec).expanduser()
    if not path.exists():
        hint = " (train with python -m laion_hf.testing.train_heads)" if spec == TINY_HEAD else ""
        raise heads.CheckpointError(f"{path}: {kind} checkpoint not found{hint}")
    return path


def load_nsfw(path: Path) -> heads.NsfwDetector:
    """LAION's autokeras SavedModel (directory or zip), or a head saved as safetensors."""
    if path.is_dir() or path.suffix == ".zip":
        from laion_hf.models.tf_savedmodel import load_nsfw_savedmodel

        return load_nsfw_savedmodel(path)
    return _expect(heads.load_head(path), heads.NsfwDetector, path)


def load_aesthetic(path: Path) -> heads.AestheticV1 | heads.AestheticV2:
    """LAION's v1 (``Linear``) or v2 (MLP) ``.pth`` state dict, or a head saved as safetensors."""
    if path.suffix in (".pth", ".pt"):
        state = read_tensors(path, "aesthetic predictor state dict")
        return heads.load_aesthetic_v1(path) if "weight" in state else heads.load_aesthetic_v2(path)
    return _expect(heads.load_head(path), (heads.AestheticV1, heads.AestheticV2), path)


def load_watermark(path: Path) -> heads.WatermarkDetector:
    """LAION's ``watermark_model_v1.pt`` (efficientnet_b3a state dict), or safetensors."""
    if path.suffix in (".pth", ".pt"):
        return heads.load_watermark(path)
    return _expect(heads.load_head(path), heads.WatermarkDetector, path)


LOADERS = {"nsfw": load_nsfw, "aesthetic": load_aesthetic, "watermark": load_watermark}


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


@dataclass
class ScoreStage(Stage):
    """Add float32 ``punsafe`` / ``pwatermark`` / ``aesthetic`` for alive rows (null for dropped ones).

    Each head is a spec: ``"laion"`` (LAION's published checkpoint for ``clip``'s
    embeddings, in ``models_dir``), ``"tiny"`` (the synthetic domain's), a path,
    or None to skip that column. ``clip`` / ``clip_pretrained`` embed the images
    when the batch carries no ``image_embedding``. An image that cannot be
    decoded cannot be scored: its row is marked ``image-decode-error`` (counted,
    never silently lost). An existing score column is kept (see the module doc)
    unless ``overwrite``; ``columns`` maps a score to another output column.
    """

    nsfw: str | None = LAION
    aesthetic: str | None = LAION
    watermark: str | None = LAION
    clip: str = DEFAULT_CLIP
    clip_pretrained: str | None = DEFAULT_WEIGHTS
    batch_size: int = 64
    overwrite: bool = False
    columns: Mapping[str, str] = field(default_factory=dict)
    models_dir: str | None = None
    cache_dir: str | None = None
    name: str = "score"
    _models: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def specs(self) -> dict[str, str]:
        """Score column -> head spec, for the heads asked for."""
        given = {"punsafe": self.nsfw, "pwatermark": self.watermark, "aesthetic": self.aesthetic}
        return {score: spec for score, spec in given.items() if spec}

    def output_column(self, score: str) -> str:
        return self.columns.get(score, score)

    def plan(self, input_columns: list[str]) -> dict[str, str]:
        """Score -> ``computed``, or ``kept`` when an input with these columns already has it (and not ``overwrite``)."""
        outputs = {score: self.output_column(score) for score in self.specs()}
        present = resolve_columns(input_columns, list(outputs.values()))
        return {score: KEPT if present[out] and not self.overwrite else COMPUTED for score, out in outputs.items()}

    def head_paths(self, scores) -> dict[str, Path]:
        """The checkpoint each of ``scores`` needs (raises, naming how to supply it, when one is missing)."""
        specs = self.specs()
        return {score: head_path(HEAD_OF[score], specs[score], self.clip, self.models_dir) for score in scores}

    def load(self, scores) -> None:
        """Load the heads ``scores`` need (and the CLIP, for an embedding score) now, not at the first batch."""
        for score in scores:
            self._head(score)
        if set(scores) & set(EMBEDDING_SCORES):
            self._clip()

    def _head(self, score: str) -> torch.nn.Module:
        if score not in self._models:
            self._models[score] = LOADERS[HEAD_OF[score]](self.head_paths([score])[score])
        return self._models[score]

    def _clip(self):
        if "clip" not in self._models:
            from laion_hf.models.clip import load_clip

            self._models["clip"] = load_clip(self.clip, pretrained=self.clip_pretrained, cache_dir=self.cache_dir)
        return self._models["clip"]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_models"] = {}  # workers load their own copy on first need
        return state

    def __call__(self, batch: pa.Table) -> pa.Table:
        todo = [score for score, what in self.plan(batch.column_names).items() if what == COMPUTED]
        if not todo:
            return batch
        rows = np.flatnonzero(np.asarray(alive_mask(batch), dtype=bool))
        needs_embedding = any(score in EMBEDDING_SCORES for score in todo)
        has_embedding = EMBEDDING_COLUMN in batch.column_names
        images: list[Image.Image] = []
        if "pwatermark" in todo or (needs_embedding and not has_embedding):
            if IMAGE not in batch.column_names:
                raise UserError(f"stage {self.name}: scoring needs the images (an {IMAGE} column) or {EMBEDDING_COLUMN}")
            decoded = [decode_image(data) for data in batch[IMAGE].take(pa.array(rows, pa.int64())).to_pylist()]
            undecodable = np.array([image is None for image in decoded], dtype=bool)
            if undecodable.any():
                mask = np.zeros(batch.num_rows, dtype=bool)
                mask[rows[undecodable]] = True
                batch = mark_dropped(batch, pa.array(mask), UNDECODABLE)
                rows = rows[~undecodable]
            images = [image for image in decoded if image is not None]

        scores: dict[str, np.ndarray] = {}
        if needs_embedding:
            embeddings = self._embeddings(batch, rows, images, has_embedding)
            with torch.no_grad():
                for score in todo:
                    if score in EMBEDDING_SCORES:
                        scores[score] = self._batched(self._head(score), embeddings, HEAD_OF[score])
        if "pwatermark" in todo:
            scores["pwatermark"] = self._pwatermark(images)
        for score, values in scores.items():
            batch = _set_scores(batch, self.output_column(score), rows, values)
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
        clip = self._clip()
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
        detector = self._head("pwatermark")
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


NSFW_COLUMN = "NSFW"


@dataclass
class NsfwTagStage(Stage):
    """LAION-400M's tag from punsafe: NSFW at or above ``nsfw_at``, UNSURE at or above ``unsure_at``, else UNLIKELY."""

    unsure_at: float
    nsfw_at: float
    name: str = "nsfw-tag"

    def __call__(self, batch: pa.Table) -> pa.Table:
        column = resolve_columns(batch.column_names, ["punsafe"])["punsafe"]
        if column is None:
            raise UserError(f"stage {self.name}: the NSFW tag needs a punsafe column (run the punsafe head first)")
        scores = pc.cast(batch[column], pa.float64())
        tag = pc.if_else(
            pc.greater_equal(scores, self.nsfw_at),
            "NSFW",
            pc.if_else(pc.greater_equal(scores, self.unsure_at), "UNSURE", "UNLIKELY"),
        )
        if NSFW_COLUMN in batch.column_names:
            return batch.set_column(batch.column_names.index(NSFW_COLUMN), NSFW_COLUMN, tag)
        return batch.append_column(NSFW_COLUMN, tag)
