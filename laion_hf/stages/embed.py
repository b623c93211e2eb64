"""CLIP embeddings and image-text similarity for every alive row of a batch.

The stage decodes each row's original image bytes (the bytes themselves are
never touched; only a decoded copy is preprocessed), runs the image tower,
and embeds the caption with the text encoder the recipe asks for: LAION-5B
used the CLIP text tower for English captions and the multilingual student
(clip-ViT-B-32-multilingual-v1) for every other language. It adds
``similarity`` (cosine, float32; null for rows an earlier stage dropped),
``image_embedding`` and ``text_embedding`` (fp16 fixed-size lists, what
clip-retrieval saves), and marks rows whose image cannot be decoded.

Decoding runs in a thread pool one model batch ahead of the forward pass, so
on a GPU the model never waits for PIL; torch releases the GIL in its kernels.
"""

from __future__ import annotations

import io
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from laion_hf.io.samples import IMAGE
from laion_hf.schema import require_columns, resolve_columns
from laion_hf.stages.base import Stage, alive_mask, mark_dropped

SIMILARITY = "similarity"
IMAGE_EMBEDDING = "image_embedding"
TEXT_EMBEDDING = "text_embedding"
DECODE_ERROR = "image-decode-error"
ENGLISH = "en"


def _decode(data: bytes, preprocess, size: int) -> torch.Tensor | None:
    """Preprocessed pixels of one image, or None when the bytes are not a readable image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (size, size))  # JPEG: let the decoder downscale large images for free
        return preprocess(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


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

    ``multilingual``: embed non-English captions (by the ``language`` column)
    with the multilingual encoder; without it, or without a language column,
    every caption goes through the CLIP text tower (LAION-400M's recipe).
    """

    name = "clip-embed"

    def __init__(
        self,
        model: str = "laion-hf-tiny",
        *,
        pretrained: str | None = None,
        multilingual: str | bool | None = True,
        batch_size: int = 256,
        workers: int = 2,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.model_name = model
        self.pretrained = pretrained
        self.multilingual = multilingual
        self.batch_size = batch_size
        self.workers = workers
        self.device = device
        self.precision = precision
        self.clip = None
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Ship the recipe, not the model: each worker loads it once in setup().
        return {**self.__dict__, "clip": None, "_pool": None}

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
        )
        self._pool = ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="clip-decode")
        self._image_size = self.clip.model.visual.image_size
        self._image_size = self._image_size[0] if isinstance(self._image_size, tuple) else self._image_size
        self._dim = self.clip.encode_texts([""]).shape[1]

    @property
    def checksums(self) -> dict[str, str]:
        self.setup()
        return self.clip.checksums

    def _decode_chunk(self, images: list[bytes]) -> list[torch.Tensor | None]:
        return list(self._pool.map(lambda b: _decode(b, self.clip.preprocess, self._image_size), images))

    def _pin(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.device.startswith("cuda"):
            return pixels.pin_memory().to(self.device, non_blocking=True)
        return pixels

    def _encode_text(self, captions: list[str], english: np.ndarray) -> torch.Tensor:
        out = torch.empty((len(captions), self._dim), dtype=torch.float32)
        if english.any():
            out[torch.from_numpy(english)] = self.clip.encode_texts([c for c, e in zip(captions, english) if e]).cpu()
        if (~english).any():
            texts = [c for c, e in zip(captions, english) if not e]
            out[torch.from_numpy(~english)] = self.clip.encode_multilingual(texts).cpu()
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.setup()
        columns = require_columns(batch.column_names, ["caption", IMAGE], "clip-embed input")
        language_column = resolve_columns(batch.column_names, ["language"])["language"]
        rows = np.flatnonzero(np.asarray(alive_mask(batch).to_numpy(zero_copy_only=False), bool))
        images = batch[columns[IMAGE]].to_pylist()
        captions = [c or "" for c in batch[columns["caption"]].to_pylist()]
        if language_column and self.clip.multilingual is not None:
            languages = batch[language_column].to_pylist()
            english_rows = np.array([(languages[i] or "").lower() == ENGLISH for i in range(batch.num_rows)])
        else:
            english_rows = np.ones(batch.num_rows, bool)

        chunks = [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        pending: deque[Future] = deque()
        for chunk in chunks[:2]:  # decode one batch ahead of the forward pass
            pending.append(self._pool.submit(self._decode_chunk, [images[i] for i in chunk]))
        done_rows, image_parts, text_parts, failed = [], [], [], []
        for k, chunk in enumerate(chunks):
            decoded = pending.popleft().result()
            if k + 2 < len(chunks):
                pending.append(self._pool.submit(self._decode_chunk, [images[i] for i in chunks[k + 2]]))
            ok = np.array([p is not None for p in decoded], bool)
            failed.extend(chunk[~ok].tolist())
            if not ok.any():
                continue
            kept = chunk[ok]
            pixels = self._pin(torch.stack([p for p in decoded if p is not None]))
            image_embedding = self.clip.encode_images(pixels).cpu()
            text_embedding = self._encode_text([captions[i] for i in kept], english_rows[kept])
            done_rows.append(kept)
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
        batch = _set(batch, SIMILARITY, pa.array(similarity, pa.float32(), mask=~valid))
        batch = _set(batch, IMAGE_EMBEDDING, _embedding_column(n, dim, index, image_emb.astype(np.float16)))
        batch = _set(batch, TEXT_EMBEDDING, _embedding_column(n, dim, index, text_emb.astype(np.float16)))
        if failed:
            mask = np.zeros(n, bool)
            mask[failed] = True
            batch = mark_dropped(batch, pa.array(mask), DECODE_ERROR)
        return batch

