"""Each LAION link rule on its own, and the urllib shortcuts checked against urllib itself."""

from __future__ import annotations

import random
from urllib.parse import urljoin, urlsplit

import ftfy
import pytest

from laion_hf.extract import rules
from laion_hf.extract.rules import Resolver, host_and_path


def test_image_alt_needs_img_src_and_non_empty_alt():
    assert rules.image_alt({"path": "IMG@/src", "url": "/a.jpg", "alt": "a cat"}) == "a cat"
    assert rules.image_alt({"path": "IMG@/src", "url": "/a.jpg", "alt": ""}) is None
    assert rules.image_alt({"path": "IMG@/src", "url": "/a.jpg"}) is None
    assert rules.image_alt({"path": "A@/href", "url": "/a.jpg", "alt": "a cat"}) is None
    assert rules.image_alt({"path": "IMG@/data-src", "url": "/a.jpg", "alt": "a cat"}) is None


@pytest.mark.parametrize(
    ("page", "base", "src", "expected"),
    [
        ("https://ex.com/blog/post.html", None, "/img/a.jpg", "https://ex.com/img/a.jpg"),
        ("https://ex.com/blog/post.html", None, "a.jpg", "https://ex.com/blog/a.jpg"),
        ("https://ex.com/blog/post.html", None, "../a.jpg", "https://ex.com/a.jpg"),
        ("https://ex.com/blog/post.html", None, "//cdn.ex.net/a.jpg", "https://cdn.ex.net/a.jpg"),
        ("http://ex.com/blog/post.html", None, "//cdn.ex.net/a.jpg", "http://cdn.ex.net/a.jpg"),
        ("https://ex.com/blog/post.html", "https://static.ex.org/assets/", "a.jpg", "https://static.ex.org/assets/a.jpg"),
        ("https://ex.com/blog/post.html", "/media/", "a.jpg", "https://ex.com/media/a.jpg"),
        ("https://ex.com/blog/post.html", "/media/", "https://other.org/b.png", "https://other.org/b.png"),
    ],
)
def test_relative_urls_resolve_against_head_base_then_page(page, base, src, expected):
    assert rules.resolve_url(src, rules.page_base(page, base)) == expected


def test_resolver_shortcuts_equal_urljoin():
    bases = [
        "https://ex.com/a/b/page.html", "http://ex.com", "https://ex.com/a/?q=1#f", "HTTPS://Ex.COM:8080/a/b",
        "https://u:p@ex.com/a/b", "https://ex.com/a//b/c", "https://ex.com/a/./b", "https://ex.com/a;x/b",
        "ftp://ex.com/a", "android-app://ex.com/a", "http:///a/b", "https://ex.com:8080", "https://ex.com/a b/c",
    ]
    pieces = ["a", "b.jpg", "..", ".", "", "x:y", "?q=1", "#f", "//", "/", " ", "%20", "é", "\\", "\t", ";p", "@", "cdn.ex"]
    rng = random.Random(7)
    for _ in range(20000):
        src = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6)))
        base = rng.choice(bases)
        try:
            expected = urljoin(base, src.strip())
        except ValueError:
            expected = None
        assert Resolver(base).resolve(src) == expected, (base, src)


def test_host_and_path_equals_urlsplit(laion_pairs):
    urls = laion_pairs["URL"].to_pylist()
    odd = ["HTTP://Ex.com:80/A.SVG?x", "https://u@ex.com/a", "https://[::1]/a", "https://ex.com\\a", "https://é.com/a", "ftp://ex.com/a"]
    for url in [*urls, *odd]:
        try:
            parts = urlsplit(url)
            expected = (parts.hostname or "", parts.path) if parts.scheme in ("http", "https") else None
        except ValueError:
            expected = None
        assert host_and_path(url) == expected, url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://ex.com/a.jpg", None),
        ("https://ex.com/a.jpg?x=.gif", None),
        ("https://ex.com/logo.svg", rules.SVG),
        ("https://ex.com/logo.SVG?v=2", rules.SVG),
        ("https://ex.com/anim.gif", rules.GIF),
        ("data:image/png;base64,AAAA", rules.DATA_URL),
        ("javascript:void(0)", rules.JAVASCRIPT_URL),
        ("ftp://ex.com/a.jpg", rules.NOT_HTTP),
        ("mailto:someone@ex.com", rules.NOT_HTTP),
        ("http:///a.jpg", rules.NOT_HTTP),
        (f"https://{'a' * 57}.com/x.jpg", rules.LONG_HOSTNAME),
        (f"https://{'a' * 56}.com/x.jpg", None),
        ("https://[bad/a.jpg", rules.BAD_URL),
    ],
)
def test_url_rejection(url, reason):
    assert rules.url_rejection(url) == reason


@pytest.mark.parametrize(
    ("alt", "caption"),
    [
        ("  A   happy\n dog  ", "A happy dog"),
        ("cafÃ© au lait", "café au lait"),
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("a\x0bb c", "ab c"),
        ("“quoted” words", '"quoted" words'),
        ("word " * 600, ("word " * 600)[:2000]),
    ],
)
def test_clean_caption(alt, caption):
    assert rules.clean_caption(alt) == caption


def test_ascii_with_ampersand_but_no_entity_skips_ftfy_with_the_same_result():
    for text in ["Salt & Pepper", "Tom&Jerry", "a & b;", "Q&A", "fish & chips;"]:
        assert rules.no_html_entity(text) and ftfy.fix_text(text) == text
    for text in ["Salt &amp; Pepper", "&#233;t&#xE9;", "P&EACUTE;REZ", "&nTILDE;"]:
        assert not rules.no_html_entity(text)
        assert rules.clean_caption(text) == " ".join(ftfy.fix_text(text).split())


def test_clean_caption_shortcut_equals_ftfy(laion_pairs):
    texts = laion_pairs["TEXT"].to_pylist()
    for text in texts:
        if text:
            assert rules.clean_caption(text) == " ".join(ftfy.fix_text(text).split())[:2000]


def test_ftfy_inert_characters_are_left_alone_by_ftfy():
    """Every character the non-ASCII shortcut admits passes ftfy's character fixers unchanged."""
    inert = [chr(cp) for cp in range(0x10000) if rules._FTFY_INERT.fullmatch(chr(cp))]
    assert len(inert) > 30_000
    changed = [c for c in inert if ftfy.fix_text(c, fix_encoding=False, normalization=None) != c]
    assert changed == []


def _mojibake(text: str) -> list[str]:
    encoded = text.encode("utf-8")
    return [encoded.decode(codec, errors="replace") for codec in ("latin-1", "windows-1252", "macroman")]


def test_ftfy_shortcut_only_when_ftfy_changes_nothing(laion_pairs):
    texts = [t for t in laion_pairs["TEXT"].to_pylist() if t and not t.isascii()]
    texts += [m for t in texts for m in _mojibake(t)]
    texts += ["sÃ³", "voilÃ le travail", "CafÃ©", "e\u0301t\u00e9", "\u201cquoted\u201d", "ﬁne", "Ｆｕｌｌ", "a&amp;b", "café &eacute;", "Salt & Pepper é", "P&EACUTE;REZ"]
    shortcut = 0
    for text in texts:
        if rules.ftfy_leaves_alone(text):
            shortcut += 1
            assert ftfy.fix_text(text) == text, text
        assert rules.clean_caption(text) == " ".join(ftfy.fix_text(text).split())[:2000], text
    assert shortcut > 400  # the real non-ASCII captions take it (already clean) while the mojibake does not


def test_short_captions_and_long_urls():
    assert rules.caption_rejection("abcd") == rules.SHORT_CAPTION
    assert rules.caption_rejection("abcde") is None
    assert len(rules.truncate_url("https://ex.com/" + "p" * 3000)) == 2000


def test_image_pair_applies_every_rule_in_order():
    resolver = Resolver("https://ex.com/blog/post.html")

    def img(**fields):
        return {"path": "IMG@/src", **fields}

    assert rules.image_pair(img(url="/a.jpg", alt=" A  cat "), resolver) == ("https://ex.com/a.jpg", "A cat")
    assert rules.image_pair(img(url="/a.jpg"), resolver) == rules.NO_ALT
    assert rules.image_pair(img(url=3, alt="a cat here"), resolver) == rules.BAD_URL
    assert rules.image_pair(img(url=" data:image/png;base64,AA", alt="inline pixel"), resolver) == rules.DATA_URL
    assert rules.image_pair(img(url="JavaScript:void(0)", alt="a script link"), resolver) == rules.JAVASCRIPT_URL
    assert rules.image_pair(img(url="/a.svg", alt="x"), resolver) == rules.SVG  # URL rules come first
    assert rules.image_pair(img(url="/a.jpg", alt=" abc  "), resolver) == rules.SHORT_CAPTION


def test_page_license_is_a_creative_commons_link():
    links = [
        {"path": "A@/href", "url": "https://ex.com/about", "text": "about"},
        {"path": "A@/href", "url": "https://creativecommons.org/licenses/by-sa/4.0/", "text": "CC"},
    ]
    assert rules.page_license(links) == "https://creativecommons.org/licenses/by-sa/4.0/"
    assert rules.page_license(links[:1]) == rules.NO_LICENSE
    assert rules.page_license([{"path": "A@/href", "url": "https://creativecommons.org/about"}]) == rules.NO_LICENSE
