"""Atomic commits: nothing that looks finished is ever half-written.

Every output file is written under a temporary name in its final directory and
renamed into place when complete; a shard's *done marker* is written last and
carries the shard's stats, so a resumed run skips the shard and still reports
its counts. Paths may be local or any fsspec URL (rename is then the
filesystem's ``mv``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_SUFFIX = ".tmp"
DONE_SUFFIX = ".done.json"


def filesystem(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``path`` and the path inside it."""
    return fsspec.core.url_to_fs(path)


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` (valid for local paths and fsspec URLs alike)."""
    return "/".join([base.rstrip("/"), *parts])


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    fs, final = filesystem(path)
    parent = final.rsplit("/", 1)[0] if "/" in final else "."
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{final}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
    local = isinstance(fs, LocalFileSystem)
    try:
        yield tmp if local else fs.unstrip_protocol(tmp)
        if local:
            os.replace(tmp, final)
        else:
            fs.mv(tmp, final)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def write_json(path: str, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as tmp, fsspec.open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def read_json(path: str) -> Any:
    with fsspec.open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def done_marker(output_dir: str, shard: str) -> str:
    return join(output_dir, f"{shard}{DONE_SUFFIX}")


def mark_done(output_dir: str, shard: str, stats: dict[str, Any]) -> None:
    """Record that ``shard`` is complete in ``output_dir``; written after all of its files."""
    write_json(done_marker(output_dir, shard), stats)


def read_done(output_dir: str, shard: str) -> dict[str, Any] | None:
    """The stats a finished shard recorded, or None if the shard is not finished."""
    path = done_marker(output_dir, shard)
    fs, inner = filesystem(path)
    return read_json(path) if fs.exists(inner) else None


def remove_stale_temporaries(output_dir: str) -> int:
    """Delete temporaries a crashed run left behind; returns how many there were."""
    fs, inner = filesystem(output_dir)
    if not fs.exists(inner):
        return 0
    stale = [p for p in fs.ls(inner, detail=False) if p.endswith(TMP_SUFFIX)]
    for p in stale:
        fs.rm(p)
    return len(stale)
