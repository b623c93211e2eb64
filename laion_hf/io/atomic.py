"""Atomic commits: nothing that looks finished is ever half-written.

Every output file is written under a temporary name in its final directory and
renamed into place when complete; a shard's *done marker* is written last and
carries the shard's stats, so a resumed run skips the shard and still reports
its counts. Paths may be local or any fsspec URL (rename is then the
filesystem's ``mv``).

laion-hf's own bookkeeping lives in the hidden folder ``OUTPUT/.laion-hf/``
(done markers in ``done/``), out of the data's way: ``datasets``, DuckDB and
``webdataset`` globs skip hidden paths, so an output folder reads as its data.
Runs from before that kept ``<shard>.done.json`` beside the data; those markers
are still honoured and moved into place when first read.
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
#: Hidden folder of an output directory holding laion-hf's bookkeeping (never data).
BOOKKEEPING_DIR = ".laion-hf"
DONE_DIR = "done"
#: Where runs before the hidden folder wrote done markers: ``OUTPUT/<shard>.done.json``.
LEGACY_DONE_SUFFIX = ".done.json"


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


def bookkeeping_path(output_dir: str, *parts: str) -> str:
    """A path inside ``output_dir``'s hidden bookkeeping folder."""
    return join(output_dir, BOOKKEEPING_DIR, *parts)


def done_marker(output_dir: str, shard: str) -> str:
    return bookkeeping_path(output_dir, DONE_DIR, f"{shard}.json")


def adopt_legacy(legacy: str, current: str) -> bool:
    """Move a bookkeeping file an older run left beside the data to ``current``; True if there was one."""
    fs, legacy_inner = filesystem(legacy)
    if not fs.exists(legacy_inner):
        return False
    _, current_inner = filesystem(current)
    fs.makedirs(current_inner.rsplit("/", 1)[0], exist_ok=True)
    fs.mv(legacy_inner, current_inner)
    return True


def mark_done(output_dir: str, shard: str, stats: dict[str, Any]) -> None:
    """Record that ``shard`` is complete in ``output_dir``; written after all of its files."""
    write_json(done_marker(output_dir, shard), stats)


def read_done(output_dir: str, shard: str) -> dict[str, Any] | None:
    """The stats a finished shard recorded, or None if the shard is not finished.

    A marker an older run wrote beside the data is moved into the hidden folder first.
    """
    path = done_marker(output_dir, shard)
    fs, inner = filesystem(path)
    if fs.exists(inner) or adopt_legacy(join(output_dir, f"{shard}{LEGACY_DONE_SUFFIX}"), path):
        return read_json(path)
    return None


def remove_stale_temporaries(output_dir: str) -> int:
    """Delete temporaries a crashed run left behind (beside the data and among its markers); how many."""
    stale = []
    for directory in (output_dir, bookkeeping_path(output_dir, DONE_DIR)):
        fs, inner = filesystem(directory)
        if fs.exists(inner):
            stale.extend((fs, p) for p in fs.ls(inner, detail=False) if p.endswith(TMP_SUFFIX))
    for fs, p in stale:
        fs.rm(p)
    return len(stale)
