"""The WAT reader: every metadata record in order, damage skipped with its offset, unreadable files refused."""

from __future__ import annotations

import gzip

import orjson
import pytest

from laion_hf.extract.wat import (
    CORRUPT_GZIP,
    TRUNCATED_RECORD,
    MalformedLog,
    UnreadableInputError,
    iter_metadata_payloads,
    next_member,
)
from laion_hf.testing.wat import Image, Page, write_wat


def pages(n: int) -> list[Page]:
    return [Page(url=f"https://ex.com/{i}", images=[Image(f"/{i}.jpg", f"picture {i}")]) for i in range(n)]


def uris(path: str, log: MalformedLog) -> list[str]:
    return [orjson.loads(p)["Envelope"]["WARC-Header-Metadata"]["WARC-Target-URI"] for _, p in iter_metadata_payloads(path, log)]


def test_reads_request_response_and_metadata_records_of_every_page(tmp_path):
    path = write_wat(str(tmp_path / "a.warc.wat.gz"), pages(3))
    log = MalformedLog()
    assert uris(path, log) == [f"https://ex.com/{i}" for i in range(3) for _ in range(3)]
    assert log.entries == []


def test_a_corrupt_member_is_skipped_and_reading_resumes_at_the_next(tmp_path):
    path = write_wat(str(tmp_path / "a.warc.wat.gz"), pages(4))
    data = open(path, "rb").read()
    offsets = [o for o, _ in iter_metadata_payloads(path, MalformedLog())]
    start, end = offsets[4], offsets[5]  # the response record of page 1
    damaged = data[:start] + data[start : start + (end - start) // 2] + data[end:]
    with open(path, "wb") as f:
        f.write(damaged)
    log = MalformedLog()
    got = uris(path, log)
    assert got == [u for u in (f"https://ex.com/{i}" for i in range(4) for _ in range(3))][:4] + [f"https://ex.com/{i}" for i in (1, 2, 2, 2, 3, 3, 3)]
    assert [(e.reason, e.offset) for e in log.entries] == [(CORRUPT_GZIP, start)]


def test_next_member_finds_gzip_headers_across_chunk_edges(tmp_path):
    import io

    member = gzip.compress(b"x")
    stream = io.BytesIO(b"\0" * ((1 << 20) - 1) + member)
    assert next_member(stream, 0) == (1 << 20) - 1
    assert next_member(io.BytesIO(b"no header here"), 0) is None


def test_files_that_are_not_wat_are_refused(tmp_path):
    text = tmp_path / "plain.txt"
    text.write_text("hello")
    with pytest.raises(UnreadableInputError, match="plain.txt"):
        list(iter_metadata_payloads(str(text), MalformedLog()))
    empty = tmp_path / "empty.warc.wat.gz"
    empty.write_bytes(b"")
    assert list(iter_metadata_payloads(str(empty), MalformedLog())) == []


@pytest.mark.parametrize("keep", [40, 400])  # cut inside the WARC headers / inside the JSON payload
def test_a_record_cut_short_is_counted_not_yielded(tmp_path, keep):
    path = write_wat(str(tmp_path / "a.warc.wat.gz"), pages(2))
    data = open(path, "rb").read()
    offsets = [o for o, _ in iter_metadata_payloads(path, MalformedLog())]
    record = gzip.decompress(data[offsets[-1] :])
    with open(path, "wb") as f:
        f.write(data[: offsets[-1]] + gzip.compress(record[:keep]))
    log = MalformedLog()
    assert [o for o, _ in iter_metadata_payloads(path, log)] == offsets[:-1]
    assert [(e.reason, e.offset) for e in log.entries] == [(TRUNCATED_RECORD, offsets[-1])]
