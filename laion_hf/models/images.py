"""Image bytes -> the RGB picture every model sees: one decoder for the embed and score stages.

The models' own transforms (open_clip's preprocess, LAION's watermark resize)
start from an RGB ``PIL.Image``; how the bytes become that image is decided
here, once, the way img2dataset decodes the pictures LAION's published
embeddings were computed on (img2dataset's resizer decodes with OpenCV):

- the EXIF orientation is applied (OpenCV's ``imread`` does), so a phone photo
  stored sideways is seen upright;
- transparency is composited onto white (img2dataset's alpha matting), so a
  logo on a transparent background does not turn into whatever colour the
  invisible pixels happen to hold (``convert("RGB")`` alone keeps that colour);
- everything else (CMYK, greyscale, palette, 16-bit) is converted to RGB by Pillow.

Bytes that are not a readable image give None: the stages mark such rows
``image-decode-error`` instead of failing the shard. Pillow reports a damaged
file with several exception types (a PNG whose chunk stream breaks after the
header raises ``SyntaxError: broken PNG file``), all listed in
:data:`DECODE_ERRORS`.
"""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageOps

#: What Pillow raises for bytes that are not (or no longer) a decodable image.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
WHITE = (255, 255, 255)


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)


def decode_image(data: bytes, draft_size: int | None = None) -> Image.Image | None:
    """The RGB image ``data`` shows, or None when the bytes cannot be decoded.

    ``draft_size``: let a JPEG decoder downscale by a power of two while
    keeping both sides at least this large (``Image.draft``). Faster for
    large photos, but the pixels then differ from a full decode followed by
    the model's own resize (measured in docs/models.md), so it is opt-in.
    """
    try:
        image = Image.open(io.BytesIO(data))
        if draft_size:
            image.draft("RGB", (draft_size, draft_size))
        image.load()
        image = ImageOps.exif_transpose(image)
        if has_alpha(image):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, WHITE + (255,))
            return Image.alpha_composite(background, image).convert("RGB")
        return image.convert("RGB")
    except DECODE_ERRORS:
        return None
