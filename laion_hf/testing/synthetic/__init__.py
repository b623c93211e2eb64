"""A procedurally generated image/caption domain whose every label is known.

No real CLIP checkpoint or image dataset can be downloaded here, so the
project trains its tiny CLIP, its scoring heads and its tests on this domain:
shapes, colours, counts, layouts and textures, captioned in English, German,
French and Spanish, with a designated unsafe motif, a watermark overlay and a
generator-defined aesthetic score. Everything is a pure function of a seed.

>>> s = sample(7)
>>> s.image.size, sorted(s.captions)
((64, 64), ['de', 'en', 'es', 'fr'])
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field

from PIL import Image

from laion_hf.testing.synthetic.attributes import (
    COLOURS,
    LAYOUTS,
    SHAPES,
    TEXTURES,
    Attributes,
    aesthetic_score,
    different_attributes,
    random_attributes,
)
from laion_hf.testing.synthetic.captions import LANGUAGES, caption, captions
from laion_hf.testing.synthetic.render import render

__all__ = [
    "COLOURS",
    "LANGUAGES",
    "LAYOUTS",
    "SHAPES",
    "TEXTURES",
    "Attributes",
    "SyntheticSample",
    "aesthetic_score",
    "caption",
    "captions",
    "mismatched_caption",
    "render",
    "sample",
]


@dataclass
class SyntheticSample:
    """One generated image with its captions and labels."""

    seed: int
    image: Image.Image
    attributes: Attributes
    captions: dict[str, str] = field(repr=False)
    unsafe: bool
    watermark: bool
    aesthetic: float

    def encode(self, format: str = "JPEG", quality: int = 92) -> bytes:
        """The image as file bytes (what an image server would send)."""
        buffer = io.BytesIO()
        if format.upper() == "JPEG":
            self.image.save(buffer, format="JPEG", quality=quality)
        else:
            self.image.save(buffer, format=format)
        return buffer.getvalue()


def sample(
    seed: int,
    *,
    size: int = 64,
    unsafe: bool | None = None,
    watermark: bool | None = None,
    p_overlay: float = 0.15,
) -> SyntheticSample:
    """The scene for ``seed``: deterministic for a given seed and arguments.

    ``unsafe`` / ``watermark`` force the overlays on or off; left as None, each
    appears with probability ``p_overlay``.
    """
    rng = random.Random(seed)
    attributes = random_attributes(rng, unsafe=unsafe, watermark=watermark, p_overlay=p_overlay)
    return SyntheticSample(
        seed=seed,
        image=render(attributes, rng, size=size),
        attributes=attributes,
        captions=captions(attributes),
        unsafe=attributes.unsafe,
        watermark=attributes.watermark,
        aesthetic=aesthetic_score(attributes),
    )


def mismatched_caption(attributes: Attributes, language: str = "en", seed: int = 0) -> str:
    """A caption of a different scene (other shape, colour and background): a true negative pair."""
    return caption(different_attributes(random.Random(seed), attributes), language)
