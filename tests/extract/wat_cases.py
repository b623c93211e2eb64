"""Hard-case WAT fixtures: pages covering every LAION rule, damaged records, and the pairs expected from them."""

from __future__ import annotations

import gzip
import io
import json

from laion_hf.extract import rules
from laion_hf.testing.wat import Image, Page, WatWriter

CC_LICENSE = "https://creativecommons.org/licenses/by-sa/4.0/"
LONG_ALT = "word " * 600
LONG_SRC = "/" + "p" * 2100 + ".jpg"

RULE_PAGES = [
    Page(
        url="https://example.com/blog/post.html",
        links=[("A@/href", "https://example.com/about", "About"), ("A@/href", CC_LICENSE, "CC BY-SA")],
        images=[
            Image("/img/cat.jpg", "A cute cat sleeping"),
            Image("dog.jpg", "  A   happy\n dog  "),
            Image("//cdn.example.net/x.png", "Protocol relative image"),
            Image("/logo.svg", "Company logo svg"),
            Image("/anim.GIF", "Animated banner"),
            Image("data:image/png;base64,AAAA", "inline data image"),
            Image("javascript:void(0)", "javascript link"),
            Image("/no-alt.jpg", None),
            Image("/empty-alt.jpg", ""),
            Image("/short.jpg", " abc "),
            Image("ftp://example.com/a.jpg", "ftp hosted image"),
            Image(f"https://{'a' * 61}.com/x.jpg", "long hostname image"),
            Image("/img/cat.jpg", "A cute cat sleeping"),  # repeated on the page
            Image("/mojibake.jpg", "cafÃ© au lait"),
            Image("/long-alt.jpg", LONG_ALT),
            Image(LONG_SRC, "very long url image"),
        ],
    ),
    Page(
        url="https://example.org/page",
        base="https://static.example.org/assets/",
        images=[Image("pic.jpg", "Picture resolved against base"), Image("/img/cat.jpg", "A cute cat sleeping")],
    ),
    Page(url="https://example.net/a/b.html", base="/media/", images=[Image("x.jpg", "Relative base image")]),
    Page(url="https://example.net/no-images.html", links=[("A@/href", "https://example.net/", "home")]),
]

# (url, caption, page_url, license) in output order
RULE_PAIRS = [
    ("https://example.com/img/cat.jpg", "A cute cat sleeping", "https://example.com/blog/post.html", CC_LICENSE),
    ("https://example.com/blog/dog.jpg", "A happy dog", "https://example.com/blog/post.html", CC_LICENSE),
    ("https://cdn.example.net/x.png", "Protocol relative image", "https://example.com/blog/post.html", CC_LICENSE),
    ("https://example.com/mojibake.jpg", "café au lait", "https://example.com/blog/post.html", CC_LICENSE),
    ("https://example.com/long-alt.jpg", " ".join(LONG_ALT.split())[:2000], "https://example.com/blog/post.html", CC_LICENSE),
    (("https://example.com" + LONG_SRC)[:2000], "very long url image", "https://example.com/blog/post.html", CC_LICENSE),
    ("https://static.example.org/assets/pic.jpg", "Picture resolved against base", "https://example.org/page", "?"),
    ("https://static.example.org/img/cat.jpg", "A cute cat sleeping", "https://example.org/page", "?"),
    ("https://example.net/media/x.jpg", "Relative base image", "https://example.net/a/b.html", "?"),
]

RULE_DROPS = {
    rules.SVG: 1,
    rules.GIF: 1,
    rules.DATA_URL: 1,
    rules.JAVASCRIPT_URL: 1,
    rules.NO_ALT: 2,
    rules.SHORT_CAPTION: 1,
    rules.NOT_HTTP: 1,
    rules.LONG_HOSTNAME: 1,
    rules.DUPLICATE_IN_FILE: 1,
}


def write_rule_wat(path: str) -> None:
    with open(path, "wb") as raw:
        writer = WatWriter(raw, wat_filename="rules.warc.wat.gz", warc_filename="CC-MAIN-rules.warc.gz")
        for page in RULE_PAGES:
            writer.write_page(page)


def _response_json(writer: WatWriter, page: Page) -> dict:
    """The JSON body of a page's response record, as WatWriter lays it out (to damage it on purpose)."""
    return {"Container": {"Filename": writer.warc_filename}, "Envelope": writer.response_envelope(page, "<urn:uuid:x>")}


def write_damaged_wat(path: str) -> dict[str, int]:
    """A WAT file with one of each kind of damage between good pages; returns the offset of each damage."""
    buffer = io.BytesIO()
    writer = WatWriter(buffer, wat_filename="damaged.warc.wat.gz", warc_filename="CC-MAIN-damaged.warc.gz")
    good = [Page(url=f"https://good.example/{i}", images=[Image(f"/g{i}.jpg", f"good picture {i}")]) for i in range(5)]
    offsets: dict[str, int] = {}
    writer.write_page(good[0])

    bad_page = Page(url="https://bad.example/json", images=[Image("/b.jpg", "lost caption one")])
    text = json.dumps(_response_json(writer, bad_page)).replace('"Links": [', '"Links": [,', 1)
    offsets["invalid_json"] = writer.write_record("metadata", text.encode(), headers={"Content-Type": "application/json"})
    writer.write_page(good[1])

    utf8_page = Page(url="https://bad.example/utf8", images=[Image("/c.jpg", "PLACEHOLDER")])
    payload = json.dumps(_response_json(writer, utf8_page)).encode().replace(b"PLACEHOLDER", b"caf\xe9 cr\xe8me")
    offsets["invalid_utf8"] = writer.write_record("metadata", payload, headers={"Content-Type": "application/json"})
    writer.write_page(good[2])

    keyless = _response_json(writer, Page(url="https://bad.example/keys", images=[Image("/d.jpg", "lost caption two")]))
    del keyless["Envelope"]["WARC-Header-Metadata"]["WARC-Target-URI"]
    offsets["missing_keys"] = writer.write_record("metadata", json.dumps(keyless).encode(), headers={"Content-Type": "application/json"})
    writer.write_page(good[3])

    member = gzip.compress(b"WARC/1.0\r\nWARC-Type: metadata\r\nContent-Length: 5000\r\n\r\n" + b"IMG@/src " * 400)
    offsets["corrupt_gzip"] = buffer.tell()
    buffer.write(member[: len(member) // 2])  # a truncated gzip member in the middle of the file
    writer.write_page(good[4])

    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return offsets


DAMAGED_GOOD_PAIRS = {(f"https://good.example/g{i}.jpg", f"good picture {i}") for i in range(5)}
