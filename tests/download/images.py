"""Images for the download tests: incompressible noise, so a 64x64 PNG (~12 KB) passes LAION's 5 KB rule."""

from __future__ import annotations

import io
import random

from PIL import Image


def noise_image(seed: int, size: int = 64, fmt: str = "PNG") -> bytes:
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()
