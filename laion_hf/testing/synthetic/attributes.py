"""What a synthetic scene is made of, and how its labels follow from it.

A scene is a few objects of one shape and colour, laid out in a row, a column
or scattered, on a coloured, optionally textured background. Two optional
overlays carry the labels the scoring heads learn: a designated "unsafe"
motif (a hazard sign: a yellow triangle with a black bar) and a
semi-transparent watermark. The aesthetic score is a deterministic function
of the attributes (colour harmony, order, clutter, overlays), so every label
is known exactly rather than annotated.
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import asdict, dataclass

SHAPES = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "purple": (140, 50, 180),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
TEXTURES = ("plain", "striped", "dotted", "checkered")
LAYOUTS = ("row", "column", "scattered")
MAX_COUNT = 4


@dataclass(frozen=True)
class Attributes:
    """Everything a caption can say about a scene (and the two label overlays)."""

    shape: str
    colour: str
    count: int
    layout: str
    background: str
    texture: str
    unsafe: bool = False
    watermark: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def random_attributes(
    rng: random.Random, *, unsafe: bool | None = None, watermark: bool | None = None, p_overlay: float = 0.15
) -> Attributes:
    """Draw a scene; the object colour always differs from the background so the objects are visible."""
    colour = rng.choice(list(COLOURS))
    background = rng.choice([c for c in COLOURS if c != colour])
    count = rng.randint(1, MAX_COUNT)
    return Attributes(
        shape=rng.choice(SHAPES),
        colour=colour,
        count=count,
        layout=rng.choice(LAYOUTS) if count > 1 else "row",
        background=background,
        texture=rng.choice(TEXTURES),
        unsafe=rng.random() < p_overlay if unsafe is None else unsafe,
        watermark=rng.random() < p_overlay if watermark is None else watermark,
    )


def different_attributes(rng: random.Random, original: Attributes) -> Attributes:
    """A scene that disagrees with ``original`` on shape, object colour and background colour.

    Used for mismatched captions: a caption that shares at most layout, count or
    texture with the image is a clear negative for the CLIP filter.
    """
    while True:
        other = random_attributes(rng, unsafe=False, watermark=False)
        if (
            other.shape != original.shape
            and other.colour != original.colour
            and other.background != original.background
        ):
            return other


def _hue_lightness(colour: str) -> tuple[float, float, float]:
    r, g, b = (c / 255 for c in COLOURS[colour])
    return colorsys.rgb_to_hls(r, g, b)


def aesthetic_score(attributes: Attributes) -> float:
    """A 1-10 score from composition and colour harmony, defined by the generator.

    Higher for: strong lightness contrast between objects and background,
    complementary hues, ordered layouts (row/column over scattered), calm
    backgrounds (plain over busy textures) and fewer objects. Overlays
    (watermark, hazard sign) spoil the picture.
    """
    hue_a, light_a, sat_a = _hue_lightness(attributes.colour)
    hue_b, light_b, sat_b = _hue_lightness(attributes.background)
    contrast = abs(light_a - light_b)  # 0..~0.8
    hue_distance = min(abs(hue_a - hue_b), 1 - abs(hue_a - hue_b)) * 2  # 0 (same) .. 1 (complementary)
    harmony = hue_distance * min(sat_a, sat_b)  # greys have no hue to harmonise
    order = {"row": 1.0, "column": 1.0, "scattered": 0.3}[attributes.layout]
    calm = {"plain": 1.0, "striped": 0.6, "dotted": 0.5, "checkered": 0.2}[attributes.texture]
    sparseness = 1 - (attributes.count - 1) / (MAX_COUNT - 1)
    score = 1 + 2.5 * min(contrast / 0.6, 1) + 2.0 * harmony + 1.5 * order + 1.5 * calm + 1.5 * sparseness
    if attributes.watermark:
        score -= 2.0
    if attributes.unsafe:
        score -= 1.0
    return round(max(1.0, min(10.0, score)), 3)
