"""Query an index: embed a text or an image with the model the index records, search, filter, return rows.

The model is never chosen by the caller: the index says which CLIP computed its
vectors, a different ``model`` is refused, and weights whose sha256 is not the
recorded one are refused too (the vectors would live in another space and the
results would look plausible and be wrong). Filters (punsafe, language,
aesthetic) are applied after the search with over-fetch: the search asks for
more rows until ``k`` pass the filters or the index has no more to give.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from laion_hf.core.errors import UserError
from laion_hf.search.index import KnnIndex
from laion_hf.search.source import IMAGE

OVERFETCH = 4


class QueryError(UserError):
    """A query that cannot be answered as asked (empty, unreadable image, filter on a missing column)."""


class ModelMismatchError(UserError):
    """The model asked for (or loaded) is not the one that computed the index's vectors."""


@dataclass(frozen=True)
class Filters:
    """Row filters applied to search results; None means no filter on that column."""

    max_punsafe: float | None = None
    language: str | None = None
    min_aesthetic: float | None = None

    def _columns(self) -> dict[str, object]:
        return {"punsafe": self.max_punsafe, "language": self.language, "aesthetic": self.min_aesthetic}

    @property
    def active(self) -> bool:
        return any(value is not None for value in self._columns().values())

    def check(self, index: KnnIndex) -> None:
        """Refuse a filter on a column the index does not carry (it would silently remove everything)."""
        for column, value in self._columns().items():
            if value is not None and column not in index.info.columns:
                raise QueryError(f"{index.folder}: cannot filter on {column}: the index has no {column} column "
                                 f"(it has: {', '.join(index.info.columns)}); score the data before indexing")

    def keep(self, rows: pa.Table) -> np.ndarray:
        """True for rows that pass; a null score fails a score filter (unknown is not safe)."""
        keep = pa.array(np.ones(rows.num_rows, bool))
        if self.max_punsafe is not None:
            keep = pc.and_(keep, pc.fill_null(pc.less_equal(rows["punsafe"], self.max_punsafe), False))
        if self.min_aesthetic is not None:
            keep = pc.and_(keep, pc.fill_null(pc.greater_equal(rows["aesthetic"], self.min_aesthetic), False))
        if self.language is not None:
            same = pc.equal(pc.utf8_lower(rows["language"]), self.language.lower())
            keep = pc.and_(keep, pc.fill_null(same, False))
        return keep.to_numpy(zero_copy_only=False)


class Searcher:
    """An opened index with its model, loaded on the first query that needs it (thread-safe)."""

    def __init__(self, index: KnnIndex, *, model: str | None = None, pretrained: str | None = None,
                 device: str = "cpu") -> None:
        recorded = index.info.model["name"]
        if model and model != recorded:
            raise ModelMismatchError(f"{index.folder}: the index was built from {recorded!r} embeddings; "
                                     f"a query embedded with --model {model!r} would search another space")
        self.index = index
        self.pretrained = pretrained or index.info.model.get("pretrained")
        self.device = device
        self._models: dict[bool, Any] = {}
        self._lock = threading.Lock()

    def load_model(self, multilingual: bool = False):
        """Load (once) and check the index's CLIP; `serve` calls it at start so a wrong model fails early."""
        return self._model(multilingual)

    def _model(self, multilingual: bool = False):
        """The index's CLIP (with the multilingual encoder that goes with it when asked), checked once."""
        from laion_hf.models.clip import DEFAULT_WEIGHTS, load_clip

        with self._lock:
            if multilingual not in self._models:
                name = self.index.info.model["name"]
                # none recorded = the weights the model name means, never random ones
                clip = load_clip(name, pretrained=self.pretrained or DEFAULT_WEIGHTS, multilingual=multilingual or None,
                                 device=self.device)
                self._verify(clip)
                self._models[multilingual] = clip
            return self._models[multilingual]

    def _verify(self, clip) -> None:
        recorded = set(self.index.info.model.get("checksums", {}).values())
        loaded = set(clip.checksums.values())
        if recorded and loaded and not loaded & recorded:
            raise ModelMismatchError(
                f"{self.index.folder}: the loaded {clip.name} weights (sha256 {', '.join(sorted(loaded))[:80]}) are "
                f"not the ones the index recorded ({', '.join(sorted(recorded))[:80]}); pass the same --pretrained")

    def _checked(self, vectors) -> np.ndarray:
        vectors = vectors.cpu().numpy()
        if vectors.shape[1] != self.index.info.dimension:
            raise ModelMismatchError(f"{self.index.folder}: the model embeds into {vectors.shape[1]} dimensions, "
                                     f"the index holds {self.index.info.dimension}")
        return vectors

    def embed_text(self, text: str, *, multilingual: bool = False) -> np.ndarray:
        if not text or not text.strip():
            raise QueryError("empty query: give a text, or --image FILE")
        clip = self._model(multilingual)
        encode = clip.encode_multilingual if multilingual else clip.encode_texts
        with self._lock:
            return self._checked(encode([text.strip()]))

    def embed_image(self, data: bytes, name: str = "image") -> np.ndarray:
        import torch
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise QueryError(f"{name}: not a readable image ({exc})") from exc
        clip = self._model()
        pixels = torch.stack([clip.preprocess(image)]).to(self.device)
        with self._lock:
            return self._checked(clip.encode_images(pixels))

    def search(self, vector: np.ndarray, k: int = 20, *, modality: str = IMAGE,
               filters: Filters = Filters()) -> list[dict[str, Any]]:
        """The ``k`` best rows that pass ``filters``: metadata plus ``id`` and ``score`` (cosine to the query)."""
        if k < 1:
            raise QueryError(f"k must be at least 1 (got {k})")
        filters.check(self.index)
        total = self.index.info.rows
        fetch = min(k * OVERFETCH if filters.active else k, total)
        while True:
            scores, ids = self.index.search(modality, vector, fetch)
            found = ids[0] >= 0
            scores, ids = scores[0][found], ids[0][found]
            rows = self.index.metadata.take(pa.array(ids, pa.int64()))
            keep = filters.keep(rows)
            if keep.sum() >= k or fetch >= total or len(ids) < fetch:
                break  # enough, or the index (or the lists it probes) has nothing more
            fetch = min(fetch * OVERFETCH, total)
        results = []
        for position in np.flatnonzero(keep)[:k]:
            row = rows.slice(int(position), 1).to_pylist()[0]
            results.append({"id": int(ids[position]), "score": round(float(scores[position]), 6), **row})
        return results


def read_query_image(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise QueryError(f"{path}: cannot read the query image ({exc.strerror})") from exc
