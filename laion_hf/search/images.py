"""Thumbnails for the search page, straight from the built shards: (shard, key) -> image bytes.

Result rows carry the shard and key of their sample, and the filter's output
folder (or a config folder) holds the matching ``NNNNN.tar``. Showing those
bytes instead of the remote URL lets the page work offline and show exactly
the image that was kept, not whatever the URL serves today. A tar's member
offsets are read once (headers only) and kept; each image is then one seek.
"""

from __future__ import annotations

import tarfile
import threading
from pathlib import Path

from laion_hf.io.tar import member_extension, sample_key

CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class ImageStore:
    """Images of the samples in the tars of one folder, looked up by shard name and sample key."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._members: dict[str, dict[str, tuple[int, int, str]]] = {}
        self._lock = threading.Lock()

    def _index(self, shard: str) -> dict[str, tuple[int, int, str]]:
        with self._lock:
            if shard not in self._members:
                members: dict[str, tuple[int, int, str]] = {}
                path = self.folder / f"{shard}.tar"
                if path.is_file():
                    with tarfile.open(path) as tar:
                        for member in tar:
                            extension = member_extension(member.name)
                            if member.isfile() and extension in CONTENT_TYPES:
                                members[sample_key(member.name)] = (member.offset_data, member.size, extension)
                self._members[shard] = members
            return self._members[shard]

    def get(self, shard: str, key: str) -> tuple[bytes, str] | None:
        """The image bytes and content type of sample ``key`` in ``shard``, or None if not there."""
        if not shard or "/" in shard or shard.startswith("."):
            return None
        found = self._index(shard).get(key)
        if found is None:
            return None
        offset, size, extension = found
        with open(self.folder / f"{shard}.tar", "rb") as f:
            f.seek(offset)
            return f.read(size), CONTENT_TYPES[extension]
