"""The LAION sample hash and the digests that removal lists are written in.

``hash = mmh3.hash64((url + text).encode("utf-8"))[0]``: signed int64, seed 0,
first half of MurmurHash3 x64/128, None read as "". LAION used it as the join
key between metadata, safety and watermark tables, and Re-LAION publishes it.
"""

from __future__ import annotations

import hashlib
import re

import mmh3
import pyarrow as pa

_HEX = re.compile(r"[0-9a-f]+")
HEX_LENGTHS = {"md5": 32, "sha256": 64}


def laion_hash(url: str | None, text: str | None) -> int:
    """LAION's join key for one (url, caption) pair."""
    return mmh3.hash64(((url or "") + (text or "")).encode("utf-8"))[0]


def laion_hash_array(urls: pa.Array | pa.ChunkedArray, texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """:func:`laion_hash` over two string columns, as an int64 Arrow array."""
    hash64 = mmh3.hash64
    values = [
        hash64(((u or "") + (t or "")).encode("utf-8"))[0]
        for u, t in zip(urls.to_pylist(), texts.to_pylist())
    ]
    return pa.array(values, type=pa.int64())


def hex_digest(algorithm: str, data: bytes) -> str:
    """Lower-case hex ``md5`` or ``sha256`` of ``data``."""
    return hashlib.new(algorithm, data).hexdigest()


def url_digest(algorithm: str, url: str | None) -> str | None:
    """Digest of a URL's UTF-8 bytes, compared byte for byte (no normalisation); None stays None."""
    return None if url is None else hex_digest(algorithm, url.encode("utf-8"))


def normalize_hex(value: str, algorithm: str) -> str | None:
    """Canonical form of a hex digest (case- and whitespace-insensitive), or None if it is not one."""
    cleaned = "".join(value.split()).lower()
    if len(cleaned) == HEX_LENGTHS[algorithm] and _HEX.fullmatch(cleaned):
        return cleaned
    return None
