"""The demo WAT writer produces Common Crawl's layout, which fastwarc (and so any WAT tool) reads."""

from __future__ import annotations

import orjson
from fastwarc.warc import ArchiveIterator

from laion_hf.testing.wat import Image, Page, write_wat


def test_layout_is_warcinfo_then_three_metadata_records_per_page(tmp_path):
    page = Page(
        url="https://ex.com/post",
        base="https://static.ex.com/",
        images=[Image("a.jpg", "a picture"), Image("b.jpg")],
        links=[("A@/href", "https://creativecommons.org/licenses/by/4.0/", "CC BY")],
    )
    path = write_wat(str(tmp_path / "CC-MAIN-x-00001.warc.wat.gz"), [page, Page(url="https://ex.com/2")])
    records = [(dict(r.headers), r.reader.read()) for r in ArchiveIterator(open(path, "rb"), parse_http=False)]
    assert [h["WARC-Type"] for h, _ in records] == ["warcinfo"] + ["metadata"] * 6
    assert records[0][0]["WARC-Filename"] == "CC-MAIN-x-00001.warc.wat.gz"

    bodies = [orjson.loads(body) for _, body in records[1:4]]
    kinds = [b["Envelope"]["WARC-Header-Metadata"]["WARC-Type"] for b in bodies]
    assert kinds == ["request", "response", "metadata"]
    assert all(b["Container"]["Filename"] == "CC-MAIN-x-00001.warc.gz" for b in bodies)
    html = bodies[1]["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
    assert html["Head"]["Base"] == "https://static.ex.com/"
    assert {"path": "IMG@/src", "url": "a.jpg", "alt": "a picture"} in html["Links"]
    assert {"path": "IMG@/src", "url": "b.jpg"} in html["Links"]  # no alt attribute at all
    assert records[2][0]["WARC-Target-URI"] == "https://ex.com/post"


def test_each_record_is_its_own_gzip_member(tmp_path):
    path = write_wat(str(tmp_path / "a.warc.wat.gz"), [Page(url=f"https://ex.com/{i}") for i in range(3)])
    data = open(path, "rb").read()
    positions = [r.stream_pos for r in ArchiveIterator(open(path, "rb"), parse_http=False)]
    assert len(positions) == 10
    assert all(data[p : p + 2] == b"\x1f\x8b" for p in positions)
