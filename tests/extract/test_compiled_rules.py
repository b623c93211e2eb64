"""The compiled per-link rules (laion_hf/extract/_rules.pyx) against their Python reference, result for result."""

from __future__ import annotations

import importlib
import random

import pytest

from laion_hf.extract import compiled, rules
from laion_hf.extract.rules import Resolver


@pytest.fixture(scope="module")
def _rules():
    return pytest.importorskip("laion_hf.extract._rules", reason="not built: `make install` builds it")


BASES = [
    "https://ex.com/blog/post.html", "http://ex.com", "https://ex.com/a/?q=1#f", "HTTPS://Ex.COM:8080/a/b",
    "https://u:p@ex.com/a/b", "https://ex.com/a//b/c", "https://ex.com/a;x/b", "ftp://ex.com/a", "http:///a/b",
    "https://ex.com/a b/c", "https://é.example/a/", "https://ex.com/caf%C3%A9/",
]


def both(compiled_rules, links: list, base: str) -> tuple:
    """(reference, compiled) results of one page, each with the seen set and drop counts it leaves."""
    results = []
    for page_pairs in (rules.page_pairs, compiled_rules.page_pairs):
        seen, dropped = {("https://ex.com/seen.jpg", "already seen once")}, {}
        kept, img_links = page_pairs(links, Resolver(base), seen, dropped)
        results.append((kept, img_links, seen, dropped))
    return results[0], results[1]


def test_the_extractor_uses_the_compiled_rules():
    assert compiled.COMPILED, "laion_hf.extract._rules is not built: `make install` or `python setup.py build_ext --inplace`"
    from laion_hf.extract import _rules

    assert compiled.page_pairs is _rules.page_pairs


def test_every_rule_case_gives_the_reference_result(_rules):
    img = {"path": "IMG@/src"}
    links = [
        {**img, "url": "/a.jpg", "alt": " A  cat "}, {**img, "url": "/a.jpg"}, {**img, "url": 3, "alt": "a cat here"},
        {**img, "url": " data:image/png;base64,AA", "alt": "inline pixel"}, {**img, "url": "DATA:x", "alt": "inline pixel"},
        {**img, "url": "JavaScript:void(0)", "alt": "a script link"}, {**img, "url": "/a.svg", "alt": "x"},
        {**img, "url": "/a.jpg", "alt": " abc  "}, {**img, "url": "https://ex.com/seen.jpg", "alt": "already seen once"},
        {**img, "url": "/a.jpg", "alt": "A cat"}, {**img, "url": "/b.GIF?x=1", "alt": "a gif here"},
        {**img, "url": f"https://{'a' * 57}.com/x.jpg", "alt": "long host name"}, {**img, "url": "//cdn.ex.net/a.jpg", "alt": "cdn"},
        {**img, "url": "//", "alt": "empty host"}, {**img, "url": "", "alt": "empty source"}, {**img, "url": "a.jpg", "alt": "Tom &amp; Jerry"},
        {**img, "url": "../a.jpg", "alt": "cafÃ© au lait"}, {**img, "url": "https://ex.com/" + "p" * 3000, "alt": "word " * 600},
        {"path": "A@/href", "url": "/a.jpg", "alt": "an anchor"}, ["not", "a", "dict"], None, {"url": "/x.jpg", "alt": "no path"},
        {**img, "url": "http://[bad/a.jpg", "alt": "bad ipv6 host"}, {**img, "url": "mailto:x@ex.com", "alt": "mail link"},
        {**img, "url": "https://ex.com/a b.jpg", "alt": "space in path"}, {**img, "url": "https://ex.com\\a.jpg", "alt": "backslash"},
        {**img, "url": "HTTP://Ex.com:80/A.SVG?x", "alt": "upper-case svg"}, {**img, "url": "https://ex.com:x/a.jpg", "alt": "bad port"},
        {**img, "url": "javascript:", "alt": "short javascript"}, {**img, "url": "javascrİpt:x", "alt": "dotted capital I"},
        {**img, "url": "/a.jpg", "alt": "Salt & Pepper"}, {**img, "url": "/a.jpg", "alt": "a\x0bb c d e"},
    ]
    for base in BASES:
        reference, fast = both(_rules, links, base)
        assert fast == reference, base


PIECES_SRC = ["a", "b.jpg", "..", ".", "", "x:y", "?q=1", "#f", "//", "/", " ", "%20", "é", "\\", "\t", ";p", "@", "cdn.ex",
              "http://", "https://", "HTTP://", "hTtPs://", "data:", "DATA:", "javascript:", "JavaScript:", ":8080", ":",
              ".svg", ".SVG", ".gif", ".GiF", ".png", "\x00", "\x1c", "\u212a", "İ", "\u00a0", "\u2028", "a" * 61, "[", "]"]
PIECES_ALT = ["a", "cat", " ", "  ", "\t", "\n", "é", "Ã©", "&amp;", "&", "&#233;", "&eacute", ";", "\x0b", "\x85",
              "\u00a0", "“", "ﬁ", "Ｆ", "日本", "\x00", "\x7f", "word " * 450, "  x  ", "İ", "\u212a"]


def test_fuzzed_links_give_the_reference_result(_rules):
    rng = random.Random(11)
    for _ in range(4000):
        links = []
        for _ in range(rng.randrange(1, 8)):
            link = {"path": rng.choice(["IMG@/src", "IMG@/src", "IMG@/src", "A@/href", None, 7])}
            if rng.random() < 0.95:
                link["url"] = "".join(rng.choice(PIECES_SRC) for _ in range(rng.randrange(0, 6)))
            if rng.random() < 0.1:
                link["url"] = rng.choice([None, 12, 1.5, ["x"], {"a": 1}, True])
            if rng.random() < 0.9:
                link["alt"] = "".join(rng.choice(PIECES_ALT) for _ in range(rng.randrange(0, 8)))
            if rng.random() < 0.05:
                link["alt"] = rng.choice([None, 3, ["x"], False])
            links.append(link if rng.random() < 0.97 else rng.choice([None, "IMG@/src", ["IMG@/src"]]))
        links += links[: rng.randrange(0, 3)]  # repeats within the page
        reference, fast = both(_rules, links, rng.choice(BASES))
        assert fast == reference, links


def test_real_laion_links_give_the_reference_result(_rules, laion_pairs):
    urls, captions = laion_pairs["URL"].to_pylist(), laion_pairs["TEXT"].to_pylist()
    rng = random.Random(5)

    def variants(url: str) -> list[str]:
        rest = url.split("://", 1)[-1]
        path = "/" + rest.split("/", 1)[-1] if "/" in rest else "/"
        return [url, "//" + rest, path, path.rsplit("/", 1)[-1] or "x.jpg", url.upper()[:12] + url[12:]]

    def mojibake(text: str) -> str:
        return text.encode("utf-8").decode(rng.choice(["latin-1", "windows-1252", "macroman"]), errors="replace")

    for start in range(0, len(urls), 50):
        links = []
        for url, caption in zip(urls[start : start + 50], captions[start : start + 50]):
            alt = caption or ""
            alt = rng.choice([alt, alt, f"  {alt}\n", mojibake(alt), alt.replace("&", "&amp;")])
            links.append({"path": "IMG@/src", "url": rng.choice(variants(url or "")), "alt": alt})
        reference, fast = both(_rules, links, rng.choice(BASES))
        assert fast == reference


def test_a_wat_file_of_real_links_extracts_to_the_same_bytes(_rules, laion_pairs, tmp_path, monkeypatch):
    """End to end: the shard written with the compiled rules is byte-identical to the one the reference writes."""
    from laion_hf.extract.extract import WatInput, extract_file

    extract_module = importlib.import_module("laion_hf.extract.extract")  # the package exports a function of that name
    from laion_hf.testing.wat import Image, Page, write_wat

    urls, captions = laion_pairs["URL"].to_pylist(), laion_pairs["TEXT"].to_pylist()
    rng = random.Random(3)
    pages = []
    for start in range(0, 2000, 20):
        images = [Image(url if rng.random() < 0.5 else "/" + url.split("/", 3)[-1], caption) for url, caption in zip(urls[start : start + 20], captions[start : start + 20])]
        images += [Image("/logo.png", "  Site   logo  "), Image("/a.svg", captions[start]), Image("data:x", "inline image")]
        pages.append(Page(url=f"https://site{start % 7}.example/p/{start}.html", images=images, base=rng.choice([None, "/media/"])))
    wat = write_wat(str(tmp_path / "real.warc.wat.gz"), pages)

    shards = {}
    for name, page_pairs in (("reference", rules.page_pairs), ("compiled", _rules.page_pairs)):
        monkeypatch.setattr(extract_module, "page_pairs", page_pairs)
        stats = extract_file(WatInput(name, wat), str(tmp_path / name))
        shards[name] = ((tmp_path / name / f"{name}.parquet").read_bytes(), {k: v for k, v in stats.items() if k != "seconds"})
    assert shards["compiled"] == shards["reference"]
    assert shards["compiled"][1]["kept"] > 1500
