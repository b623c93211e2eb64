"""Real image files as LAION shards hold them, made from a real photograph (no network).

The photograph is Grace Hopper's portrait that matplotlib ships as sample data
(``matplotlib.cbook.get_sample_data``; matplotlib is a dependency). Each maker
returns encoded bytes in one of the formats a download keeps: a large JPEG, a
PNG with an alpha channel (a cut-out whose transparent pixels are black, as
exporters commonly leave them), a CMYK JPEG, a WebP, a JPEG stored sideways
with an EXIF orientation tag, and a PNG that opens but breaks while decoding.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from laion_hf.io.tar import write_samples

EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6  # EXIF orientation: the stored picture must be turned 90 degrees clockwise to display


def photo(width: int = 1200, height: int = 1400) -> Image.Image:
    """The real photograph as RGB, resized (Lanczos) to ``width`` x ``height`` (a large photo by default)."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        image = Image.open(f).convert("RGB")
    return image.resize((width, height), Image.LANCZOS)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    return encode(image, "JPEG", quality=quality)


def png_with_alpha(image: Image.Image) -> bytes:
    """A cut-out: a transparent border (RGB zeroed, alpha 0), a soft edge, an opaque centre."""
    rgba = np.asarray(image.convert("RGBA")).copy()
    h, w = rgba.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    distance = np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2))
    alpha = np.clip((1.0 - distance) * 3.0, 0.0, 1.0)
    rgba[..., 3] = np.round(alpha * 255).astype(np.uint8)
    rgba[rgba[..., 3] == 0, :3] = 0
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def cmyk_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    return encode(image.convert("CMYK"), "JPEG", quality=quality)


def webp(image: Image.Image, quality: int = 90) -> bytes:
    return encode(image, "WEBP", quality=quality)


def exif_rotated_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    """JPEG bytes that store ``image`` turned 90 degrees counter-clockwise, with the tag that turns it back."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    return encode(image.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=quality, exif=exif.tobytes())


def broken_png(image: Image.Image) -> bytes:
    """A PNG that opens (valid header) but whose second IDAT chunk has a corrupt chunk type.

    Pillow raises ``SyntaxError: broken PNG file`` only when decoding reaches that chunk.
    """
    data = encode(image, "PNG")
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    payload = data[start + 8 : start + 8 + length]
    half = len(payload) // 2

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    split = chunk(b"IDAT", payload[:half]) + chunk(b"ID\x00T", payload[half:])
    return data[:start] + split + data[start + 12 + length :]


def displayed(data: bytes) -> Image.Image:
    """What a viewer shows for ``data``, worked out by hand for the files above (the expected decoding):
    the orientation tag's turn applied, transparency matted on white with img2dataset's formula."""
    image = Image.open(io.BytesIO(data))
    if image.getexif().get(EXIF_ORIENTATION) == ROTATE_90_CW:
        return image.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    if image.mode == "RGBA":
        rgba = np.asarray(image, dtype=np.float64)
        alpha = rgba[..., 3:] / 255
        return Image.fromarray(np.rint(alpha * rgba[..., :3] + (1 - alpha) * 255).astype(np.uint8), "RGB")
    return image.convert("RGB")


def formats(image: Image.Image) -> dict[str, tuple[str, bytes]]:
    """Name -> (file extension as a download stores it, bytes) for every readable real format."""
    return {
        "jpeg": ("jpg", jpeg(image)),
        "png-alpha": ("png", png_with_alpha(image)),
        "cmyk-jpeg": ("jpg", cmyk_jpeg(image)),
        "webp": ("webp", webp(image)),
        "exif-rotated-jpeg": ("jpg", exif_rotated_jpeg(image)),
    }


def format_batch(image: Image.Image) -> tuple[pa.Table, list[str]]:
    """A stage input: each real format of ``image``, then a PNG of what each displays, then the broken PNG."""
    files = {name: data for name, (_, data) in formats(image).items()}
    names = list(files)
    shown = [encode(displayed(files[name]), "PNG") for name in names]
    keys = names + [f"{name}-shown" for name in names] + ["broken-png"]
    return pa.table({
        "key": keys,
        "caption": ["a portrait photograph of a woman in uniform"] * len(keys),
        "image": pa.array([files[name] for name in names] + shown + [broken_png(image)], pa.binary()),
        "image_ext": ["jpg"] * len(keys),
    }), names


def real_format_files(count: int) -> list[tuple[str, bytes]]:
    """``count`` (extension, bytes) image files cycling through the real formats at several sizes."""
    sizes = [(1200, 1400), (640, 480), (300, 420), (1024, 768)]
    by_size = {size: list(formats(photo(*size)).values()) for size in sizes[: min(count, len(sizes))]}
    return [by_size[sizes[i % len(sizes)]][i % 5] for i in range(count)]


def write_shard(directory: Path, rows: list[dict], files: list[tuple[str, bytes]], name: str = "00000") -> list[str]:
    """One img2dataset-layout shard: ``KEY.<ext>``/``.txt``/``.json`` members and the sidecar parquet.

    ``rows`` are the metadata (e.g. LAION's columns, with ``caption`` or ``TEXT``); a
    ``key`` and ``status`` are added as img2dataset writes them. Returns the keys.
    """
    directory.mkdir(parents=True, exist_ok=True)
    keys = [f"{name}{i:04d}" for i in range(len(rows))]
    captions = [str(row.get("caption", row.get("TEXT", ""))) for row in rows]
    write_samples(
        str(directory / f"{name}.tar"),
        ((key, {extension: data, "txt": caption.encode(), "json": json.dumps({"key": key}).encode()})
         for key, caption, (extension, data) in zip(keys, captions, files)),
    )
    table = pa.Table.from_pylist([{**row, "key": key, "status": "success"} for row, key in zip(rows, keys)])
    pq.write_table(table, directory / f"{name}.parquet")
    return keys
