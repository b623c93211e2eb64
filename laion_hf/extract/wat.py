"""Stream the JSON payloads of a WAT file's metadata records, surviving damaged gzip members.

A Common Crawl WAT file is a concatenation of gzip members, one WARC record
each. fastwarc decompresses and splits them while the file is read, so a file
is never held in memory. A damaged member (truncated download, flipped bytes)
makes the decompressor fail; instead of losing the rest of the file, the
reader records the damage (file and byte offset), scans forward to the next
gzip member header and carries on from there. Inputs are local paths or any
fsspec URL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import IO

from fastwarc.warc import ArchiveIterator, WarcRecordType
from fsspec.implementations.local import LocalFileSystem

from laion_hf.core.errors import UserError
from laion_hf.io.atomic import filesystem

GZIP_MAGIC = b"\x1f\x8b\x08"
_SCAN_CHUNK = 1 << 20

CORRUPT_GZIP = "corrupt_gzip"
TRUNCATED_RECORD = "truncated_record"
EMPTY_FILE = "empty_file"


class UnreadableInputError(UserError):
    """An input WAT file that cannot be opened or is not a WARC/WAT file at all."""


@dataclass(frozen=True)
class Malformed:
    """One damaged record or member: why, in which file, at which byte offset (of the gzip member)."""

    reason: str
    file: str
    offset: int
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


LOGGER = logging.getLogger(__name__)


class MalformedLog:
    """Collects :class:`Malformed` entries and logs a warning for each, naming the file and offset."""

    def __init__(self) -> None:
        self.entries: list[Malformed] = []

    def add(self, reason: str, file: str, offset: int, detail: str = "") -> None:
        entry = Malformed(reason, file, offset, detail)
        self.entries.append(entry)
        LOGGER.warning("%s at byte %d: %s (%s); skipped", file, offset, reason, detail)


def _open(path: str) -> IO[bytes]:
    """A binary stream of ``path``; local files use the built-in reader (fastwarc reads it fastest)."""
    try:
        fs, inner = filesystem(path)
        if isinstance(fs, LocalFileSystem):
            return open(inner, "rb")
        return fs.open(inner, "rb")
    except (OSError, ValueError) as exc:
        raise UnreadableInputError(f"{path}: cannot open WAT file: {exc}") from exc


def next_member(stream: IO[bytes], start: int) -> int | None:
    """Offset of the first gzip member header at or after ``start``, or None if there is none."""
    stream.seek(start)
    position = start
    tail = b""
    while chunk := stream.read(_SCAN_CHUNK):
        window = tail + chunk
        found = window.find(GZIP_MAGIC)
        if found >= 0:
            return position - len(tail) + found
        tail = window[-(len(GZIP_MAGIC) - 1) :]
        position += len(chunk)
    return None


def _cut_in_headers(record) -> bool:
    """A record whose header block was cut off has no Content-Length (fastwarc then reports 0)."""
    return record.headers.get("Content-Length") is None


def iter_metadata_payloads(path: str, log: MalformedLog) -> Iterator[tuple[int, bytes]]:
    """Yield ``(member offset, JSON payload)`` for every ``metadata`` record of the WAT file at ``path``.

    Damage is recorded in ``log``, and so is a 0-byte file (``empty_file``); a
    file with bytes of which no record can be read raises :class:`UnreadableInputError`.
    """
    stream = _open(path)
    with stream:
        start, seen_any, yielded_since_resume = 0, False, True
        while True:
            stream.seek(start)
            last = start - 1
            try:
                for record in ArchiveIterator(stream, record_types=WarcRecordType.metadata, parse_http=False):
                    last = record.stream_pos
                    payload = record.reader.read()
                    if len(payload) != record.content_length or not payload and _cut_in_headers(record):
                        declared = record.content_length or "?"
                        log.add(TRUNCATED_RECORD, path, last, f"{len(payload)} of {declared} bytes")
                        continue
                    seen_any = yielded_since_resume = True
                    yield last, payload
                if not seen_any and start == 0:
                    if stream.seek(0, 2) > 0:
                        raise UnreadableInputError(f"{path}: not a WARC/WAT file (no record could be read)")
                    log.add(EMPTY_FILE, path, 0, "0 bytes")  # a download cut before its first byte
                return
            except OSError as exc:
                broken = next_member(stream, last + 1)
                resume = None if broken is None else next_member(stream, broken + 1)
                if yielded_since_resume:
                    log.add(CORRUPT_GZIP, path, last + 1 if broken is None else broken, str(exc))
                yielded_since_resume = False
                if resume is None:
                    if not seen_any:
                        raise UnreadableInputError(f"{path}: not a readable WAT file: {exc}") from exc
                    return
                start = resume
