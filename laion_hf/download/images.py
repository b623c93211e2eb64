"""LAION's image rules on the original downloaded bytes, and what the shard stores for each image.

LAION's download kept an image only if it had at least 5 KB of bytes, at most
89,478,484 pixels and decoded. :func:`check_image` applies those rules to the
bytes as they came off the wire, reading the pixel count from the header
before any decode. :class:`ImageProcessor` adds what img2dataset records per
sample (sha256 of the original bytes, EXIF as JSON) and, with a resize mode,
resizes with img2dataset's own ``Resizer`` after the checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import exifread
from PIL import Image, UnidentifiedImageError

from laion_hf.download.options import DownloadOptions

FORMAT_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # what read_sample_batches reads back
logging.getLogger("exifread").setLevel(logging.ERROR)  # "File format not recognized." for every PNG otherwise


@dataclass(frozen=True)
class ImageCheck:
    """The verdict on one downloaded image: an extension and size, or a failure reason and message."""

    extension: str | None = None
    width: int | None = None
    height: int | None = None
    reason: str | None = None
    message: str | None = None


def check_image(data: bytes, options: DownloadOptions) -> ImageCheck:
    """Apply LAION's download rules to original image bytes (the header is read before any decode).

    When the original bytes are kept, only formats the shards can hold (JPEG,
    PNG, WebP) pass; with a resize mode every decodable format does.
    """
    if len(data) < options.min_image_bytes:
        return ImageCheck(reason="image-under-5kb", message=f"image is {len(data)} bytes, under {options.min_image_bytes}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(BytesIO(data)) as image:
                width, height = image.size
                if width * height > options.max_image_pixels:
                    return ImageCheck(
                        reason="image-too-large",
                        message=f"{width}x{height} = {width * height:,} pixels, over {options.max_image_pixels:,}",
                    )
                if min(width, height) < options.min_image_side:
                    return ImageCheck(reason="image-too-small", message=f"{width}x{height}, a side under {options.min_image_side}")
                extension = FORMAT_EXTENSIONS.get(image.format or "")
                if extension is None and options.keeps_original_bytes:
                    return ImageCheck(reason="unsupported-format", message=f"{image.format} images are not kept")
                image.load()
        except Image.DecompressionBombError as exc:
            return ImageCheck(reason="image-too-large", message=str(exc))
        except UnidentifiedImageError:  # its message holds the address of our BytesIO: not reproducible
            return ImageCheck(reason="decode-error", message="image does not decode: not a known image format")
        except (OSError, SyntaxError, ValueError) as exc:
            return ImageCheck(reason="decode-error", message=f"image does not decode: {exc}")
    return ImageCheck(extension=extension, width=width, height=height)


def exif_json(data: bytes) -> str | None:
    """img2dataset's ``exif`` column: the EXIF tags as a JSON object of strings (None if unreadable)."""
    try:
        tags = exifread.process_file(BytesIO(data), details=False)
        return json.dumps({k: str(v).strip() for k, v in tags.items() if v is not None})
    except Exception:  # noqa: BLE001 (img2dataset records None for any EXIF parsing failure)
        return None


@dataclass(frozen=True)
class Processed:
    """One fetched image as the shard records it: tar bytes and columns, or the failed check."""

    columns: dict[str, Any]  # width, height, original_width, original_height, exif, sha256
    image: bytes | None = None
    extension: str | None = None
    reason: str | None = None
    message: str | None = None


class ImageProcessor:
    """Checks, hashes and (with a resize mode) resizes fetched images; thread-safe."""

    def __init__(self, options: DownloadOptions) -> None:
        self.options = options
        self._resizer = None if options.keeps_original_bytes else _img2dataset_resizer(options)

    def __call__(self, data: bytes) -> Processed:
        columns: dict[str, Any] = {"exif": exif_json(data), "sha256": hashlib.sha256(data).hexdigest()}
        check = check_image(data, self.options)
        if check.reason is not None:
            return Processed(columns, reason=check.reason, message=check.message)
        if self._resizer is None:
            size = {"width": check.width, "height": check.height, "original_width": check.width, "original_height": check.height}
            return Processed({**columns, **size}, image=data, extension=check.extension)
        image, width, height, original_width, original_height, error = self._resizer(BytesIO(data))
        if error is not None:
            return Processed(columns, reason="resize-error", message=f"image does not resize: {error}")
        size = {"width": width, "height": height, "original_width": original_width, "original_height": original_height}
        return Processed({**columns, **size}, image=image, extension=self.options.encode_format)


def _img2dataset_resizer(options: DownloadOptions) -> Any:
    # Imported only for resize modes: img2dataset pulls in cv2 and albumentations (seconds per process).
    import os

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no update check over the network
    from img2dataset.resizer import Resizer

    return Resizer(
        image_size=options.image_size,
        resize_mode=options.resize_mode,
        resize_only_if_bigger=False,
        encode_format=options.encode_format,
        min_image_size=options.min_image_side,
        max_image_area=options.max_image_pixels,
    )
