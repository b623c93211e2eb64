"""The CLIP filter stage: mark image-text pairs whose cosine similarity is below the threshold.

Thresholds as LAION ran them: LAION-400M kept OpenAI ViT-B/32 similarity
>= 0.30; LAION-5B kept English captions (ViT-B/32 text tower) >= 0.28 and
other languages (the multilingual encoder) >= 0.26. Those numbers belong to
OpenAI's ViT-B/32 weights, which are the default model; the shipped tiny model
has its own, calibrated on held-out synthetic data
(``laion_hf/models/weights/laion-hf-tiny.quality.json``). Any other weights
have no known threshold, and a run without one is refused.

The filter step (:mod:`laion_hf.steps.filter`) runs
:class:`~laion_hf.stages.embed.ClipEmbed` and :class:`SimilarityFilter` over
image shards and saves the kept samples' embeddings.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from laion_hf.core.errors import UserError
from laion_hf.core.schema import resolve_columns
from laion_hf.core.stage import Stage, alive_mask, mark_dropped
from laion_hf.stages.embed import ENGLISH, SIMILARITY

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
