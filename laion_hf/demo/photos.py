"""Real photos in every format a LAION download holds, for tests and the demo (nothing downloaded).

matplotlib (a dependency) ships a real photograph, ``grace_hopper.jpg`` (JPEG,
512x600), and a real RGBA PNG with transparency, ``Minduka_Present_Blue_Pack.png``.
The other formats LAION shards hold are made from the photograph by the real
encoders: a CMYK JPEG (Adobe), a WebP, and a JPEG stored sideways whose EXIF
orientation (6) says how to display it, as phone cameras write them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image

#: EXIF tag 0x0112: 6 = "rotate 90 degrees clockwise to display".
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Photo:
    """One image as a download stores it: its bytes, the extension it is stored under, its displayed size."""

    name: str
    extension: str
    data: bytes
    size: tuple[int, int]


def _sample(name: str) -> bytes:
    from matplotlib import cbook

    with cbook.get_sample_data(name) as f:
        return f.read()


def _encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


@lru_cache(maxsize=1)
def real_photos() -> tuple[Photo, ...]:
    """JPEG, PNG with alpha, CMYK JPEG, WebP and EXIF-rotated JPEG, in that order."""
    jpeg = _sample("grace_hopper.jpg")
    png = _sample("Minduka_Present_Blue_Pack.png")
    photo = Image.open(io.BytesIO(jpeg))
    photo.load()
    exif = Image.Exif()
    exif[_ORIENTATION] = 6
    sideways = photo.rotate(90, expand=True)  # stored 600x512; orientation 6 turns it back upright
    return (
        Photo("jpeg", "jpg", jpeg, photo.size),
        Photo("png-alpha", "png", png, Image.open(io.BytesIO(png)).size),
        Photo("cmyk-jpeg", "jpg", _encode(photo.convert("CMYK"), "JPEG", quality=90), photo.size),
        Photo("webp", "webp", _encode(photo, "WEBP", quality=80), photo.size),
        Photo("exif-rotated", "jpg", _encode(sideways, "JPEG", quality=90, exif=exif.tobytes()), photo.size),
    )
