"""LAION's rules for turning the links of one WAT page into (image URL, alt text) pairs.

Each rule is one function so it can be tested on its own and cited: they follow
the crawling@home WAT parser and cc2dataset, which produced LAION-400M and
LAION-5B. A link that a rule rejects gets a *drop reason* (the constants
below) so the per-file stats say why every ``IMG@/src`` link was not kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

import ftfy

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


def resolve_url(src: str, base: str) -> str | None:
    """``src`` made absolute against ``base`` (relative and ``//host/...`` links); None if unparseable."""
    if src.startswith(("http://", "https://")):
        return src
    try:
        return urljoin(base, src.strip())
    except ValueError:
        return None


def url_rejection(url: str) -> str | None:
    """Why an absolute image URL is not kept (a drop reason), or None to keep it."""
    lowered = url[:16].lower()
    if lowered.startswith("data:"):
        return DATA_URL
    if lowered.startswith("javascript:"):
        return JAVASCRIPT_URL
    try:
        parts = urlsplit(url)
        hostname = parts.hostname or ""
    except ValueError:
        return BAD_URL
    if parts.scheme not in ("http", "https") or not hostname:
        return NOT_HTTP
    path = parts.path.lower()
    if path.endswith(".svg"):
        return SVG
    if path.endswith(".gif"):
        return GIF
    if len(hostname) > MAX_HOSTNAME:
        return LONG_HOSTNAME
    return None


def clean_caption(alt: str) -> str:
    """Alt text as LAION stored it: mojibake fixed by ftfy, whitespace runs collapsed, cut at 2000 chars."""
    # ftfy only changes printable ASCII through HTML entities, so that common case skips it (same result).
    plain = alt.isascii() and "&" not in alt and alt.isprintable()
    fixed = alt if plain else ftfy.fix_text(alt)
    return " ".join(fixed.split())[:MAX_TEXT]


def caption_rejection(caption: str) -> str | None:
    """Why a cleaned caption is not kept, or None to keep it."""
    return SHORT_CAPTION if len(caption) < MIN_CAPTION else None


def truncate_url(url: str) -> str:
    return url[:MAX_TEXT]


def page_license(links: Iterable[dict[str, Any]]) -> str:
    """The first creativecommons.org/licenses link on the page, or ``"?"`` when there is none."""
    for link in links:
        url = link.get("url")
        if isinstance(url, str) and LICENSE_MARK in url:
            return url[:MAX_TEXT]
    return NO_LICENSE
