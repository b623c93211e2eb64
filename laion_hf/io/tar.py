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
from typing import NamedTuple

import fsspec

from laion_hf.core.errors import UserError
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

    :mod:`tarfile` in stream mode stops without a word when the file ends at
    (or inside) a member header, or meets a damaged one; so once it stops, the
    end-of-archive marker is checked where it stopped. Raises
    :class:`CorruptTarError` naming the file if the tar is cut or damaged.
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
            raw.seek(tar.offset)
            _check_end_marker(raw.read(tarfile.BLOCKSIZE), tar.offset, path)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CorruptTarError(f"{path}: unreadable tar ({exc})") from exc


def _check_end_marker(block: bytes, offset: int, path: str) -> None:
    """Raise unless ``block``, read where the next header would be, is the end-of-archive marker."""
    if len(block) < tarfile.BLOCKSIZE:
        raise CorruptTarError(
            f"{path}: truncated: no end-of-archive marker at byte {offset} (the file was cut; samples may be missing)"
        )
    if block != tarfile.NUL * tarfile.BLOCKSIZE:
        raise CorruptTarError(f"{path}: damaged tar header at byte {offset}")


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


_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE)


def _octal(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for sizes beyond 8 GiB
        return int.from_bytes(field[1:], "big")
    return int(field.strip(b" \0") or b"0", 8)


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    """The ``keyword=value`` records of a PAX extended header."""
    records, pos = {}, 0
    while pos < len(data):
        length = int(data[pos : data.index(b" ", pos)])
        keyword, _, value = data[data.index(b" ", pos) + 1 : pos + length - 1].partition(b"=")
        records[keyword] = value
        pos += length
    return records


class Span(NamedTuple):
    """Where one member lies in a tar: ``start`` (its extended headers) .. ``end`` (its padded data)."""

    name: str
    is_file: bool
    start: int
    data: int
    size: int
    end: int


def _member_spans(raw, size: int, path: str) -> Iterator[Span]:
    """The :class:`Span` of every member, in order.

    A minimal header walk (checksum-verified USTAR/GNU/PAX headers, long names,
    PAX sizes) instead of :mod:`tarfile`'s full decode: only offsets are needed,
    and it is what keeps a rewrite near copy speed. Raises
    :class:`CorruptTarError` on a bad header, a member running past the end, or
    a missing end-of-archive marker.
    """
    offset = start = 0
    long_name: str | None = None
    pax_size: int | None = None
    try:
        while True:
            raw.seek(offset)
            header = raw.read(tarfile.BLOCKSIZE)
            if len(header) < tarfile.BLOCKSIZE or header == tarfile.NUL * tarfile.BLOCKSIZE:
                _check_end_marker(header, offset, path)
                return
            if _octal(header[148:156]) != sum(header[:148]) + 256 + sum(header[156:]):
                raise CorruptTarError(f"{path}: damaged tar header at byte {offset} (bad checksum)")
            kind = header[156:157]
            data_size = _octal(header[124:136]) if pax_size is None or kind in _EXTENDED else pax_size
            end = offset + tarfile.BLOCKSIZE + _padded(data_size)
            if end > size:
                raise CorruptTarError(f"{path}: truncated: member at byte {offset} runs past the end of the file")
            if kind in _EXTENDED:
                data = raw.read(data_size)
                if kind == tarfile.GNUTYPE_LONGNAME:
                    long_name = data.rstrip(tarfile.NUL).decode("utf-8", "surrogateescape")
                elif kind != tarfile.GNUTYPE_LONGLINK:
                    records = _pax_records(data)
                    if b"path" in records:
                        long_name = records[b"path"].decode("utf-8", "surrogateescape")
                    if b"size" in records:
                        pax_size = int(records[b"size"])
                offset = end
                continue
            name = header[:100].rstrip(tarfile.NUL).decode("utf-8", "surrogateescape")
            if header[257:265] == b"ustar\x0000" and header[345:500].strip(tarfile.NUL):
                name = header[345:500].rstrip(tarfile.NUL).decode("utf-8", "surrogateescape") + "/" + name
            yield Span(long_name or name, kind in _REGULAR, start, offset + tarfile.BLOCKSIZE, data_size, end)
            offset = start = end
            long_name, pax_size = None, None
    except CorruptTarError:
        raise
    except (ValueError, OSError) as exc:  # unparsable numbers or names, I/O errors
        raise CorruptTarError(f"{path}: unreadable tar ({exc})") from exc


SampleIndex = dict[str, dict[str, Span]]


def index_samples(path: str) -> SampleIndex:
    """``{key: {extension: span}}`` of every regular file in a tar, from one walk over its headers.

    The data is not read, so it is cheap; :func:`read_span` then reads any
    member in any order (what lets a shard be read in key order rather than in
    the order a download happened to finish). Raises :class:`CorruptTarError`
    naming the file if it is cut or damaged, or holds a member twice.
    """
    index: SampleIndex = {}
    fs, inner = filesystem(path)
    with fsspec.open(path, "rb") as raw:
        for span in _member_spans(raw, fs.size(inner), path):
            if not span.is_file:
                continue
            members = index.setdefault(sample_key(span.name), {})
            extension = member_extension(span.name)
            if extension in members:
                raise CorruptTarError(f"{path}: member {span.name} appears twice")
            members[extension] = span
    return index


def read_span(raw, span: Span, path: str) -> bytes:
    """The data of one member of the tar at ``path``, opened for binary reading as ``raw``."""
    raw.seek(span.data)
    data = raw.read(span.size)
    if len(data) != span.size:
        raise CorruptTarError(f"{path}: member {span.name} is truncated")
    return data


def rewrite_tar(src: str, dst: str, keep: Callable[[str], bool]) -> TarRewrite:
    """Copy the samples of ``src`` whose key ``keep`` accepts into ``dst`` (atomically).

    Kept members are copied as raw byte spans (extended headers, header and
    padded data exactly as in ``src``), so they are byte-identical, and runs of
    kept members are copied in one piece. A truncated or damaged ``src``
    raises :class:`CorruptTarError` naming it, and ``dst`` is not written.
    """
    result = TarRewrite()
    last_key: str | None = None
    fs, inner = filesystem(src)
    size = fs.size(inner)
    run_start = run_end = 0

    def flush() -> None:  # the walk seeks to each header itself, so moving the position here is safe
        if run_end > run_start:
            raw.seek(run_start)
            out.write(raw.read(run_end - run_start))

    with atomic_path(dst) as tmp, fsspec.open(tmp, "wb") as out, fsspec.open(src, "rb") as raw:
        for span in _member_spans(raw, size, src):
            if not span.is_file:
                continue
            start, end = span.start, span.end
            key = sample_key(span.name)
            kept = keep(key)
            if key != last_key:
                (result.kept if kept else result.removed).append(key)
                last_key = key
            if not kept:
                continue
            if start != run_end:
                flush()
                run_start = start
            run_end = end
            if run_end - run_start > 64 << 20:
                flush()
                run_start = run_end
        flush()
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
