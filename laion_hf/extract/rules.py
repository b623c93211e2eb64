"""LAION's rules for turning the links of one WAT page into (image URL, alt text) pairs.

Each rule is one function so it can be tested on its own and cited: they follow
the crawling@home WAT parser and cc2dataset, which produced LAION-400M and
LAION-5B. A link that a rule rejects gets a *drop reason* (the constants
below) so the per-file stats say why every ``IMG@/src`` link was not kept.

URL resolution and splitting give exactly :func:`urllib.parse.urljoin` /
:func:`urllib.parse.urlsplit` results, but the common plain URLs take a
shortcut (string slicing, one regular expression): they run for every image
link of the crawl, and urllib is most of the cost otherwise.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

import ftfy
from ftfy.badness import is_bad
from ftfy.chardata import HTML_ENTITY_RE

IMG_PATH = "IMG@/src"
MAX_TEXT = 2000  # URL and alt are cut here (LAION's column limit)
MIN_CAPTION = 5  # characters after cleaning
MAX_HOSTNAME = 60
LICENSE_MARK = "creativecommons.org/licenses"
NO_LICENSE = "?"  # what LAION-400M's LICENSE column holds when a page has no CC link

NO_ALT = "no_alt"
BAD_URL = "bad_url"
DATA_URL = "data_url"
JAVASCRIPT_URL = "javascript_url"
NOT_HTTP = "not_http"
SVG = "svg"
GIF = "gif"
LONG_HOSTNAME = "long_hostname"
SHORT_CAPTION = "short_caption"
DUPLICATE_IN_FILE = "duplicate_in_file"
DUPLICATE_GLOBAL = "duplicate_global"

# scheme, host (plain ASCII, no user info), optional port, then a path urlsplit would not touch
_PLAIN_HTTP = re.compile(r"(?i:https?)://([A-Za-z0-9.\-_~%!$&'()*+,;=]*)(?::[0-9]*)?(?=[/?#]|\Z)([^?#\s\\]*)(?=[?#]|\Z)")
# a relative path: no scheme-like first segment, no dot segment, no empty segment (urljoin drops those)
_RELATIVE_PLAIN = re.compile(r"[^./?#:][^/?#:]*(?:/[^/?#]+)*/?(?:[?#].*)?\Z")


def image_alt(link: dict[str, Any]) -> str | None:
    """The raw alt of an ``<img src>`` link, or None if the link is not an image or its alt is empty."""
    if link.get("path") != IMG_PATH:
        return None
    alt = link.get("alt")
    return alt if isinstance(alt, str) and alt else None


def page_base(page_url: str, head_base: Any) -> str:
    """The URL relative links resolve against: ``<base href>`` (itself relative to the page) or the page."""
    if isinstance(head_base, str) and head_base:
        try:
            return urljoin(page_url, head_base)
        except ValueError:
            return page_url
    return page_url


def _plain(text: str) -> bool:
    """No whitespace, control characters, backslashes or dot segments: urljoin would copy it as is."""
    return text.isprintable() and " " not in text and "/." not in text and "\\" not in text


class Resolver:
    """Makes a page's image links absolute, as ``urljoin(base, src)`` does.

    ``/path``, ``//host/path`` and ``name/path`` links of an http(s) base with a
    plain path are joined by slicing; anything else goes through urljoin.
    """

    __slots__ = ("base", "scheme", "origin", "directory")

    def __init__(self, base: str):
        self.base = base
        self.scheme = self.origin = self.directory = None
        match = _PLAIN_HTTP.match(base)
        if match is not None and match.group(1):
            scheme = base[: base.index(":")].lower()
            origin, path = scheme + base[len(scheme) : match.start(2)], match.group(2) or "/"
        else:
            try:
                parts = urlsplit(base)
            except ValueError:
                return
            scheme, origin, path = parts.scheme, f"{parts.scheme}://{parts.netloc}", parts.path or "/"
            if scheme not in ("http", "https") or not parts.netloc:
                return
        if _plain(path) and "//" not in path and ";" not in path:
            self.scheme, self.origin = scheme, origin
            self.directory = origin + path[: path.rfind("/") + 1]

    def resolve(self, src: str) -> str | None:
        """``src`` made absolute; None if it cannot be parsed."""
        if src.startswith(("http://", "https://")):
            return src
        if self.origin is not None and _plain(src):
            if src.startswith("//"):
                if src[2:3].isalnum() and src[2:3].isascii():  # a host follows
                    return f"{self.scheme}:{src}"
            elif src.startswith("/"):
                return self.origin + src
            elif _RELATIVE_PLAIN.match(src):
                return self.directory + src
        try:
            return urljoin(self.base, src.strip())
        except ValueError:
            return None


def resolve_url(src: str, base: str) -> str | None:
    """``src`` made absolute against ``base`` (relative and ``//host/...`` links); None if unparseable."""
    return Resolver(base).resolve(src)


def host_and_path(url: str) -> tuple[str, str] | None:
    """(lower-case hostname, path) as urlsplit gives them, or None if ``url`` is not http(s) or not parseable."""
    match = _PLAIN_HTTP.match(url)
    if match is not None:
        return match.group(1).lower(), match.group(2)
    try:
        parts = urlsplit(url)
        hostname = parts.hostname or ""
    except ValueError:
        return None
    return (hostname, parts.path) if parts.scheme in ("http", "https") else None


def url_rejection(url: str) -> str | None:
    """Why an absolute image URL is not kept (a drop reason), or None to keep it."""
    split = host_and_path(url)
    if split is None or not split[0]:
        lowered = url[:16].lower().lstrip()
        if lowered.startswith("data:"):
            return DATA_URL
        if lowered.startswith("javascript:"):
            return JAVASCRIPT_URL
        try:
            urlsplit(url)
        except ValueError:
            return BAD_URL
        return NOT_HTTP
    hostname, path = split
    path = path.lower()
    if path.endswith(".svg"):
        return SVG
    if path.endswith(".gif"):
        return GIF
    if len(hostname) > MAX_HOSTNAME:
        return LONG_HOSTNAME
    return None


# Characters that ftfy's per-character fixers (C1 controls, ligatures, widths, curly quotes, line breaks,
# surrogates, control characters) leave alone: printable ASCII, then Latin, Greek,
# Cyrillic, Hebrew, Arabic, Devanagari, Thai, general punctuation, kana, CJK and Hangul minus the ligatures
# (U+0132-3, U+0149, U+01C4-CC, U+01F1-3) and curly quotes (U+2018-F). tests/extract/test_rules.py checks
# every one of them against ftfy.
_FTFY_INERT = re.compile(
    "[\x20-\x7e\u00a1-\u0131\u0134-\u0148\u014a-\u01c3\u01cd-\u01f0\u01f4-\u024f"
    "\u0370-\u04ff\u0590-\u06ff\u0900-\u097f\u0e00-\u0e7f\u2010-\u2017\u2020-\u2027\u2030-\u205e"
    "\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7a3]*"
)
_FTFY_SHORTCUT_MAX = 10_000  # far below ftfy's 1,000,000-character segments


def ftfy_leaves_alone(alt: str) -> bool:
    """True only if ``ftfy.fix_text(alt) == alt``, decided without running ftfy's fixers.

    ftfy changes such a text only by decoding HTML entities (found by its own
    ``HTML_ENTITY_RE``), by mojibake repair, which it attempts only when its
    ``badness.is_bad`` says so, or by NFC normalisation. Running ftfy costs
    ~35 us per non-ASCII alt, this check ~2 us.
    """
    return (
        len(alt) <= _FTFY_SHORTCUT_MAX
        and _FTFY_INERT.fullmatch(alt) is not None
        and no_html_entity(alt)
        and unicodedata.is_normalized("NFC", alt)
        and not is_bad(alt)
    )


def no_html_entity(alt: str) -> bool:
    """No ``&name;`` / ``&#123;`` that ftfy's ``unescape_html`` would decode ("Salt & Pepper" has none)."""
    return "&" not in alt or HTML_ENTITY_RE.search(alt) is None


def clean_caption(alt: str) -> str:
    """Alt text as LAION stored it: mojibake fixed by ftfy, whitespace runs collapsed, cut at 2000 chars."""
    # ftfy only changes printable ASCII through HTML entities, so that common case skips it (same result);
    # "&" without an entity is in 3.6 % of LAION captions.
    plain = alt.isascii() and alt.isprintable() and no_html_entity(alt)
    fixed = alt if plain or ftfy_leaves_alone(alt) else ftfy.fix_text(alt)
    return " ".join(fixed.split())[:MAX_TEXT]


def caption_rejection(caption: str) -> str | None:
    """Why a cleaned caption is not kept, or None to keep it."""
    return SHORT_CAPTION if len(caption) < MIN_CAPTION else None


def truncate_url(url: str) -> str:
    return url[:MAX_TEXT]


def image_pair(link: dict[str, Any], resolver: Resolver) -> tuple[str, str] | str:
    """All rules applied to one ``IMG@/src`` link: ``(url, caption)`` to keep, or the drop reason."""
    alt = image_alt(link)
    if alt is None:
        return NO_ALT
    src = link.get("url")
    if not isinstance(src, str):
        return BAD_URL
    scheme = src[:11].lower()  # the two non-http schemes LAION names, caught before any parsing
    if scheme.startswith("data:"):
        return DATA_URL
    if scheme == "javascript:":
        return JAVASCRIPT_URL
    url = resolver.resolve(src)
    if url is None:
        return BAD_URL
    reason = url_rejection(url)
    if reason is not None:
        return reason
    caption = clean_caption(alt)
    reason = caption_rejection(caption)
    if reason is not None:
        return reason
    return truncate_url(url), caption


def page_pairs(links: list, resolver: Resolver, seen: set, dropped: dict) -> tuple[list[tuple[str, str]], int]:
    """Every ``IMG@/src`` link of a page through :func:`image_pair`: ``(new pairs, IMG@/src links)``.

    A pair already in ``seen`` (the file's pairs so far) is dropped as ``duplicate_in_file``;
    new pairs are added to ``seen``; drops are counted into ``dropped`` (reason -> count). This
    is the reference for the compiled :mod:`laion_hf.extract._rules`, which must give the same
    result for any input (tests/extract/test_compiled_rules.py).
    """
    kept = []
    img_links = 0
    for link in links:
        if link.__class__ is not dict or link.get("path") != IMG_PATH:
            continue
        img_links += 1
        pair = image_pair(link, resolver)
        if pair.__class__ is str:
            dropped[pair] = dropped.get(pair, 0) + 1
        elif pair in seen:
            dropped[DUPLICATE_IN_FILE] = dropped.get(DUPLICATE_IN_FILE, 0) + 1
        else:
            seen.add(pair)
            kept.append(pair)
    return kept, img_links


def page_license(links: Iterable[dict[str, Any]]) -> str:
    """The first creativecommons.org/licenses link on the page, or ``"?"`` when there is none."""
    for link in links:
        url = link.get("url") if isinstance(link, dict) else None
        if isinstance(url, str) and LICENSE_MARK in url:
            return url[:MAX_TEXT]
    return NO_LICENSE
