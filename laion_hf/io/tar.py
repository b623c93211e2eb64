"""img2dataset-layout WebDataset tars: stream samples, rewrite without removed keys.

A sample is the run of consecutive members that share a key (the basename up
to its first dot: ``000010005.jpg``, ``000010005.txt``, ``000010005.json``).
Rewriting copies each kept member's header and bytes unchanged, so kept images
are byte-identical and never re-encoded.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import fsspec

from laion_hf.errors import UserError
from laion_hf.io.atomic import atomic_path, filesystem


class CorruptTarError(UserError, ValueError):
    """A tar shard cannot be read to its end (truncated or damaged)."""


def sample_key(member_name: str) -> str:
    """WebDataset key of a member: its basename up to the first dot."""
    return member_name.rsplit("/", 1)[-1].split(".", 1)[0]


def member_extension(member_name: str) -> str:
    """Everything after the key's first dot (``jpg``, ``txt``, ``json``...)."""
    base = member_name.rsplit("/", 1)[-1]
    return base.split(".", 1)[1] if "." in base else ""


def iter_members(path: str) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    """Stream ``(header, bytes)`` of every regular file in a tar, in order.

    Raises :class:`CorruptTarError` naming the file if the tar ends early.
    """
    try:
        with fsspec.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                handle = tar.extractfile(info)
                data = handle.read() if handle is not None else b""
                if len(data) != info.size:
                    raise CorruptTarError(f"{path}: member {info.name} is truncated")
                yield info, data
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CorruptTarError(f"{path}: unreadable tar ({exc})") from exc


def iter_samples(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream ``(key, {extension: bytes})`` samples of a WebDataset tar."""
    key: str | None = None
    sample: dict[str, bytes] = {}
    for info, data in iter_members(path):
        member_key = sample_key(info.name)
        if member_key != key and key is not None:
            yield key, sample
            sample = {}
        key = member_key
        sample[member_extension(info.name)] = data
    if key is not None:
        yield key, sample


@dataclass
class TarRewrite:
    """What :func:`rewrite_tar` kept and dropped, by sample key."""

    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def rewrite_tar(src: str, dst: str, keep: Callable[[str], bool]) -> TarRewrite:
    """Copy the samples of ``src`` whose key ``keep`` accepts into ``dst`` (atomically).

    Kept members are copied as raw byte spans (extended headers, header and
    padded data exactly as in ``src``), so they are byte-identical and the
    rewrite runs near plain-copy speed: only headers are parsed, data is never
    decoded. A member running past the end of ``src``, or a tar without its
    end-of-archive marker (cut at a member boundary), raises
    :class:`CorruptTarError` naming ``src``.
    """
    result = TarRewrite()
    last_key: str | None = None
    fs, inner = filesystem(src)
    size = fs.size(inner)
    with atomic_path(dst) as tmp, fsspec.open(tmp, "wb") as out, fsspec.open(src, "rb") as raw:
        try:
            tar = tarfile.open(fileobj=raw, mode="r:")
            for info in tar:
                end = info.offset_data + _padded(info.size)
                if end > size:
                    raise CorruptTarError(f"{src}: member {info.name} is truncated")
                if not info.isfile():
                    continue
                key = sample_key(info.name)
                kept = keep(key)
                if key != last_key:
                    (result.kept if kept else result.removed).append(key)
                    last_key = key
                if kept:
                    position = raw.tell()
                    raw.seek(info.offset)
                    out.write(raw.read(end - info.offset))
                    raw.seek(position)
            raw.seek(tar.offset)
            marker = raw.read(tarfile.BLOCKSIZE)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CorruptTarError(f"{src}: unreadable tar ({exc})") from exc
        if len(marker) < tarfile.BLOCKSIZE or marker.strip(tarfile.NUL):
            raise CorruptTarError(f"{src}: truncated (no end-of-archive marker after offset {tar.offset})")
        written = out.tell() + 2 * tarfile.BLOCKSIZE
        out.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE + (-written % tarfile.RECORDSIZE)))
    return result


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append one regular-file member holding ``data``."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, _BytesReader(data))


def write_samples(dst: str, samples: Iterable[tuple[str, dict[str, bytes]]]) -> int:
    """Write ``(key, {extension: bytes})`` samples as a WebDataset tar (atomically); returns the count."""
    count = 0
    with atomic_path(dst) as tmp, fsspec.open(tmp, "wb") as out, tarfile.open(
        fileobj=out, mode="w", format=tarfile.GNU_FORMAT
    ) as tar:
        for key, members in samples:
            if "." in key:
                raise ValueError(f"WebDataset keys must not contain dots: {key!r}")
            for extension, data in members.items():
                add_member(tar, f"{key}.{extension}", data)
            count += 1
    return count


class _BytesReader:
    """Minimal file object over bytes for ``TarFile.addfile`` (avoids a BytesIO copy)."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else self._pos + size
        chunk = self._view[self._pos : end]
        self._pos += len(chunk)
        return bytes(chunk)
