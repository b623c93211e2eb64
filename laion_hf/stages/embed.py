"""CLIP embeddings and image-text similarity for every alive row of a batch.

The stage decodes each row's original image bytes (the bytes themselves are
never touched; :func:`laion_hf.models.images.decode_image` gives the upright
RGB picture, then the model's own open_clip preprocess runs on it), runs the image tower,
and embeds the caption with the text encoder the recipe asks for: LAION-5B
used the CLIP text tower for English captions and the multilingual student
(clip-ViT-B-32-multilingual-v1) for every other language. It adds
``similarity`` (cosine, float32; null for rows an earlier stage dropped),
``image_embedding`` and ``text_embedding`` (fp16 fixed-size lists, what
clip-retrieval saves), and marks rows whose image cannot be decoded.
A ``similarity`` the input already carries (LAION's metadata has one) is never
replaced silently: the stage refuses unless told to overwrite it or to write
its own under another column name.

Decoding runs in a thread pool one model batch ahead of the forward pass, so
on a GPU the model never waits for PIL; torch releases the GIL in its kernels.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from laion_hf.core.errors import UserError
from laion_hf.core.schema import require_columns, resolve_columns
from laion_hf.core.stage import Stage, alive_mask, mark_dropped
from laion_hf.io.embeddings import IMAGE_EMBEDDING, TEXT_EMBEDDING
from laion_hf.io.samples import IMAGE
from laion_hf.models.clip import normalise
from laion_hf.models.images import decode_image

SIMILARITY = "similarity"
DECODE_ERROR = "image-decode-error"
ENGLISH = "en"
DEFAULT_MODEL = "ViT-B-32-quickgelu"  # OpenAI's ViT-B/32, the model of LAION-400M's and LAION-5B's filter
DEFAULT_PRETRAINED = "default"  # laion_hf.models.clip.DEFAULT_WEIGHTS: OpenAI's weights, the shipped ones for laion-hf-tiny
OVERWRITE_HINT = "replace it (--overwrite) or write this model's similarity under another name (--similarity-column NAME)"


class ExistingScoreError(UserError):
    """The input already has the column a stage would write, and nobody said what to do with it."""


def check_not_overwriting(columns: list[str], column: str, source: str, option_hint: str) -> None:
    """Refuse to replace an existing ``column`` (matched case-insensitively, as LAION spells it in capitals too)."""
    existing = resolve_columns(columns, [column])[column]
    if existing is not None:
        raise ExistingScoreError(
            f"{source}: already has a {existing!r} column (LAION's own values?), which is never replaced "
            f"silently: {option_hint}"
        )


def _decode(data: bytes, preprocess, draft_size: int | None) -> torch.Tensor | None:
    """Preprocessed pixels of one image, or None when the bytes are not a readable image."""
    image = decode_image(data, draft_size)
    return None if image is None else preprocess(image)


@dataclass
class _Prepared:
    """One model batch, decoded and tokenised: ``ok`` marks the rows whose image decoded."""

    ok: np.ndarray
    english: np.ndarray  # per decoded row: CLIP text tower (True) or multilingual encoder
    pixels: torch.Tensor | None
    english_tokens: torch.Tensor | None
    other_tokens: dict[str, torch.Tensor] | None


def _set(batch: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in batch.column_names:
        return batch.set_column(batch.column_names.index(name), name, values)
    return batch.append_column(name, values)


def _embedding_column(rows: int, dim: int, index: np.ndarray, values: np.ndarray) -> pa.Array:
    """A fixed-size-list<float16> column; rows without an embedding are null."""
    full = np.zeros((rows, dim), np.float16)
    full[index] = values
    valid = np.zeros(rows, bool)
    valid[index] = True
    flat = pa.array(full.reshape(-1), pa.float16())
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(~valid))


class ClipEmbed(Stage):
    """Adds ``similarity`` and both embeddings; marks undecodable images (``image-decode-error``).

    The default model is the one LAION filtered with: OpenAI's ViT-B/32 (QuickGELU).
    ``multilingual``: embed non-English captions (by the ``language`` column)
    with the multilingual encoder; without it, or without a language column,
    every caption goes through the CLIP text tower (LAION-400M's recipe).
    ``similarity_column``: where the similarity goes; an input that already has
    that column is refused unless ``overwrite``. ``fast_decode``: let JPEG
    decoding downscale large images (``Image.draft``), which changes the
    similarities slightly (docs/models.md); off by default.
    """

    name = "clip-embed"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        pretrained: str | None = DEFAULT_PRETRAINED,
        multilingual: str | bool | None = True,
        batch_size: int = 256,
        workers: int = 2,
        device: str = "cpu",
        precision: str = "fp32",
        cache_dir: str | None = None,
        similarity_column: str = SIMILARITY,
        overwrite: bool = False,
        fast_decode: bool = False,
    ) -> None:
        self.model_name = model
        self.pretrained = pretrained
        self.multilingual = multilingual
        self.batch_size = batch_size
        self.workers = workers
        self.device = device
        self.precision = precision
        self.cache_dir = cache_dir
        self.similarity_column = similarity_column
        self.overwrite = overwrite
        self.fast_decode = fast_decode
        self.clip = None
        self._pool: ThreadPoolExecutor | None = None  # decodes images
        self._ahead: ThreadPoolExecutor | None = None  # prepares the next model batch meanwhile

    def __getstate__(self) -> dict[str, Any]:
        # Ship the recipe, not the model: each worker loads it once in setup().
        return {**self.__dict__, "clip": None, "_pool": None, "_ahead": None}

    def setup(self) -> None:
        if self.clip is not None:
            return
        from laion_hf.models.clip import load_clip

        self.clip = load_clip(
            self.model_name,
            pretrained=self.pretrained,
            multilingual=self.multilingual,
            device=self.device,
            precision=self.precision,
            cache_dir=self.cache_dir,
        )
        self._pool = ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="clip-decode")
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="clip-prefetch")
        self._image_size = self.clip.model.visual.image_size
        self._image_size = self._image_size[0] if isinstance(self._image_size, tuple) else self._image_size
        self._dim = self.clip.encode_texts([""]).shape[1]
        self._dtype = next(self.clip.model.parameters()).dtype  # bf16/fp16 weights take inputs of their dtype

    @property
    def checksums(self) -> dict[str, str]:
        self.setup()
        return self.clip.checksums

    def _prepare(self, images: list[bytes], captions: list[str], english: np.ndarray) -> _Prepared:
        """Everything a model batch needs from the CPU: decoded pixels and tokens (runs one batch ahead)."""
        draft = self._image_size if self.fast_decode else None
        pixels = list(self._pool.map(lambda b: _decode(b, self.clip.preprocess, draft), images))
        ok = np.array([p is not None for p in pixels], bool)
        english_tokens = other_tokens = None
        if (ok & english).any():
            english_tokens = self.clip.tokenizer([c for c, e in zip(captions, ok & english) if e])
        if (ok & ~english).any():
            other_tokens = self.clip.multilingual.tokenize([c for c, e in zip(captions, ok & ~english) if e])
        stacked = torch.stack([p for p in pixels if p is not None]) if ok.any() else None
        if stacked is not None and self.device.startswith("cuda"):
            stacked = stacked.pin_memory()  # lets the copy to the GPU overlap with compute
        return _Prepared(ok, english[ok], stacked, english_tokens, other_tokens)

    @torch.no_grad()
    def _forward(self, prepared: _Prepared) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.device
        autocast = torch.bfloat16 if self.precision == "amp_bf16" else torch.float16
        with torch.autocast(device.split(":")[0], dtype=autocast, enabled=self.precision.startswith("amp")):
            return self._towers(prepared, device)

    def _towers(self, prepared: _Prepared, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = prepared.pixels.to(device, dtype=self._dtype, non_blocking=True)
        image = normalise(self.clip.model.encode_image(pixels))
        text = torch.empty((len(prepared.english), self._dim), dtype=torch.float32)
        if prepared.english_tokens is not None:
            text[torch.from_numpy(prepared.english)] = normalise(
                self.clip.model.encode_text(prepared.english_tokens.to(device, non_blocking=True))
            ).cpu()
        if prepared.other_tokens is not None:
            tokens = {k: v.to(device, non_blocking=True) for k, v in prepared.other_tokens.items()}
            text[torch.from_numpy(~prepared.english)] = normalise(
                self.clip.multilingual(tokens["input_ids"], tokens["attention_mask"])
            ).cpu()
        return image.cpu(), text

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self.overwrite:
            check_not_overwriting(batch.column_names, self.similarity_column, "clip-embed input", OVERWRITE_HINT)
        self.setup()
        columns = require_columns(batch.column_names, ["caption", IMAGE], "clip-embed input")
        language_column = resolve_columns(batch.column_names, ["language"])["language"]
        rows = np.flatnonzero(np.asarray(alive_mask(batch).to_numpy(zero_copy_only=False), bool))
        images = batch[columns[IMAGE]].to_pylist()
        captions = [c or "" for c in batch[columns["caption"]].to_pylist()]
        if language_column and self.clip.multilingual is not None:
            languages = batch[language_column].to_pylist()
            english_rows = np.array([(language or "").lower() == ENGLISH for language in languages], bool)
        else:
            english_rows = np.ones(batch.num_rows, bool)

        chunks = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]

        def submit(chunk: np.ndarray) -> Future:
            return self._ahead.submit(
                self._prepare, [images[i] for i in chunk], [captions[i] for i in chunk], english_rows[chunk]
            )

        pending: deque[Future] = deque(submit(chunk) for chunk in chunks[:2])
        done_rows, image_parts, text_parts, failed = [], [], [], []
        for k, chunk in enumerate(chunks):
            prepared = pending.popleft().result()
            if k + 2 < len(chunks):
                pending.append(submit(chunks[k + 2]))
            failed.extend(chunk[~prepared.ok].tolist())
            if prepared.pixels is None:
                continue
            image_embedding, text_embedding = self._forward(prepared)
            done_rows.append(chunk[prepared.ok])
            image_parts.append(image_embedding)
            text_parts.append(text_embedding)
        return self._annotate(batch, done_rows, image_parts, text_parts, failed)

    def _annotate(self, batch, done_rows, image_parts, text_parts, failed) -> pa.Table:
        n, dim = batch.num_rows, self._dim
        index = np.concatenate(done_rows) if done_rows else np.zeros(0, np.int64)
        image_emb = torch.cat(image_parts).numpy() if image_parts else np.zeros((0, dim), np.float32)
        text_emb = torch.cat(text_parts).numpy() if text_parts else np.zeros((0, dim), np.float32)
        similarity = np.full(n, np.nan, np.float32)
        similarity[index] = (image_emb * text_emb).sum(-1)
        valid = np.zeros(n, bool)
        valid[index] = True
        column = resolve_columns(batch.column_names, [self.similarity_column])[self.similarity_column]
        batch = _set(batch, column or self.similarity_column, pa.array(similarity, pa.float32(), mask=~valid))
        batch = _set(batch, IMAGE_EMBEDDING, _embedding_column(n, dim, index, image_emb.astype(np.float16)))
        batch = _set(batch, TEXT_EMBEDDING, _embedding_column(n, dim, index, text_emb.astype(np.float16)))
        if failed:
            mask = np.zeros(n, bool)
            mask[failed] = True
            batch = mark_dropped(batch, pa.array(mask), DECODE_ERROR)
        return batch

