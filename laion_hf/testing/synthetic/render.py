"""Draw a synthetic scene with PIL: background texture, objects in a layout, overlays.

Geometry is relative to the image size, so the same scene renders at 64x64
for training and at a few hundred pixels where a larger file is wanted (the
demo's image server). Drawing happens at twice the size and is downsampled,
which anti-aliases edges the way a photo's would be.
"""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw, ImageFont

from laion_hf.testing.synthetic.attributes import COLOURS, Attributes

HAZARD_COLOUR = (255, 0, 170)  # hot pink: no scene colour uses it, so the motif is unambiguous
WATERMARK_TEXT = "© STOCK"
_SUPERSAMPLE = 2


def _shade(rgb: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    """Darken light colours and lighten dark ones: the second tone of a texture."""
    target = 0 if sum(rgb) > 300 else 255
    return tuple(round(c + (target - c) * amount) for c in rgb)  # type: ignore[return-value]


def _background(draw: ImageDraw.ImageDraw, size: int, colour: str, texture: str, rng: random.Random) -> None:
    base = COLOURS[colour]
    draw.rectangle([0, 0, size, size], fill=base)
    second = _shade(base, 0.35)
    step = size // rng.choice((6, 8, 10))
    offset = rng.randrange(step)
    if texture == "striped":
        for x in range(-size + offset, size * 2, step):
            draw.polygon([(x, 0), (x + step // 2, 0), (x + step // 2 - size, size), (x - size, size)], fill=second)
    elif texture == "dotted":
        radius = max(1, step // 5)
        for x in range(offset, size, step):
            for y in range(offset, size, step):
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=second)
    elif texture == "checkered":
        for i, x in enumerate(range(0, size, step)):
            for j, y in enumerate(range(0, size, step)):
                if (i + j) % 2:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=second)


def _centres(count: int, layout: str, size: int, radius: float, rng: random.Random) -> list[tuple[float, float]]:
    margin = radius * 1.3
    if layout in ("row", "column"):
        spacing = (size - 2 * margin) / max(count, 1)
        across = rng.uniform(size * 0.35, size * 0.65)
        along = [margin + spacing * (i + 0.5) + rng.uniform(-1, 1) * spacing * 0.05 for i in range(count)]
        return [(a, across) if layout == "row" else (across, a) for a in along]
    centres: list[tuple[float, float]] = []
    for _ in range(200 * count):  # rejection sampling keeps scattered objects from overlapping
        if len(centres) == count:
            break
        c = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
        if all(math.dist(c, other) > 2.3 * radius for other in centres):
            centres.append(c)
    return centres


def _star(cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = rotation + math.pi * i / 5 - math.pi / 2
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, rng: random.Random) -> None:
    outline = _shade(fill, 0.5)
    width = max(1, round(r / 8))
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=width)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill, outline=outline, width=width)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)],
                     fill=fill, outline=outline, width=width)
    elif shape == "star":
        draw.polygon(_star(cx, cy, r * 1.1, rng.uniform(-0.2, 0.2)), fill=fill, outline=outline, width=width)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _hazard(draw: ImageDraw.ImageDraw, size: int, rng: random.Random) -> None:
    """The designated unsafe motif: a pink diamond with a black exclamation bar, in a corner."""
    r = size * 0.16
    cx = rng.choice((r * 1.1, size - r * 1.1)) + rng.uniform(-1, 1) * size * 0.03
    cy = rng.choice((r * 1.1, size - r * 1.1)) + rng.uniform(-1, 1) * size * 0.03
    draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=HAZARD_COLOUR, outline=(0, 0, 0),
                 width=max(1, round(r / 6)))
    bar = r * 0.13
    draw.rectangle([cx - bar, cy - r * 0.55, cx + bar, cy + r * 0.15], fill=(0, 0, 0))
    draw.ellipse([cx - bar, cy + r * 0.3, cx + bar, cy + r * 0.3 + 2 * bar], fill=(0, 0, 0))


def _watermark(image: Image.Image, rng: random.Random) -> Image.Image:
    """Semi-transparent text across the middle, the way stock photo sites stamp previews."""
    size = image.width
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=max(8, round(size * 0.2)))
    alpha = rng.randint(110, 160)
    y = rng.uniform(0.3, 0.55) * size
    for dy in (-size * 0.3, 0, size * 0.3):
        draw.text((size * 0.04, y + dy), WATERMARK_TEXT, font=font, fill=(255, 255, 255, alpha),
                  stroke_width=max(1, size // 64), stroke_fill=(0, 0, 0, alpha // 2))
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def render(attributes: Attributes, rng: random.Random, size: int = 64) -> Image.Image:
    """Render ``attributes`` as an RGB image of ``size`` x ``size`` pixels; ``rng`` varies the details."""
    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    _background(draw, big, attributes.background, attributes.texture, rng)
    radius = big * rng.uniform(0.085, 0.11) * (1.25 if attributes.count == 1 else 1.0)
    fill = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in COLOURS[attributes.colour])
    for cx, cy in _centres(attributes.count, attributes.layout, big, radius, rng):
        _shape(draw, attributes.shape, cx, cy, radius, fill, rng)
    if attributes.unsafe:
        _hazard(draw, big, rng)
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    if attributes.watermark:
        image = _watermark(image, rng)
    return image
