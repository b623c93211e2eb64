"""decode_image on real image files: the upright RGB picture, transparency on white, broken files as None."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from laion_hf.models.images import decode_image
from tests.models import real_images


@pytest.fixture(scope="module")
def picture():
    return real_images.photo(600, 700)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_exif_rotated_jpeg_is_seen_upright(picture):
    data = real_images.exif_rotated_jpeg(picture)
    stored = Image.open(io.BytesIO(data))
    assert stored.size == (700, 600)  # the file holds the picture sideways
    decoded = decode_image(data)
    assert decoded.size == (600, 700) and decoded.mode == "RGB"
    # Orientation 6 means "turn 90 degrees clockwise to display": exactly these pixels, nothing re-sampled.
    assert np.array_equal(_pixels(decoded), _pixels(real_images.displayed(data)))
    assert np.abs(_pixels(decoded) - _pixels(picture)).mean() < 3  # and that is the photo (up to JPEG loss)


def test_transparency_is_composited_on_white_like_img2dataset(picture):
    data = real_images.png_with_alpha(picture)
    rgba = np.asarray(Image.open(io.BytesIO(data)))
    decoded = _pixels(decode_image(data))
    assert (rgba[..., 3] == 0).any() and ((rgba[..., 3] > 0) & (rgba[..., 3] < 255)).any()
    assert np.abs(decoded - _pixels(real_images.displayed(data))).max() <= 1  # img2dataset's matting, +-rounding
    assert (decoded[rgba[..., 3] == 0] == 255).all()  # transparent (stored black) pixels are white, not black


@pytest.mark.parametrize("maker", [real_images.cmyk_jpeg, real_images.webp, real_images.jpeg])
def test_other_formats_decode_to_pillows_rgb(picture, maker):
    data = maker(picture)
    decoded = decode_image(data)
    assert decoded.mode == "RGB" and decoded.size == picture.size
    assert np.array_equal(_pixels(decoded), _pixels(Image.open(io.BytesIO(data)).convert("RGB")))
    assert np.abs(_pixels(decoded) - _pixels(picture)).mean() < 4


def test_png_that_breaks_while_decoding_is_none(picture):
    data = real_images.broken_png(picture)
    opened = Image.open(io.BytesIO(data))  # the header is fine ...
    with pytest.raises(SyntaxError, match="broken PNG file"):
        opened.load()  # ... the image data is not
    assert decode_image(data) is None
    assert decode_image(b"") is None and decode_image(b"\xff\xd8 not a jpeg") is None


def test_draft_decoding_is_smaller_and_only_on_request(picture):
    data = real_images.jpeg(picture)
    assert decode_image(data).size == (600, 700)
    drafted = decode_image(data, draft_size=224)
    assert drafted.size == (300, 350)  # JPEG scaled by 1/2: the largest power of two keeping both sides >= 224
