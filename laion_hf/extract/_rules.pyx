# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""LAION's per-link rules in compiled code: :func:`laion_hf.extract.rules.page_pairs`, the same result.

Every ``IMG@/src`` link of the crawl goes through these rules, so their Python overhead was a
quarter of extraction. Here the common case, an ASCII link and alt text, is decided in C: scheme
checks, the plain-URL shortcuts of :class:`~laion_hf.extract.rules.Resolver`, the host/path split
of ``rules._PLAIN_HTTP``, the svg/gif/hostname rules, the printable-ASCII test that lets an alt
skip ftfy, and whitespace collapsing. Anything else (a non-ASCII URL or alt, an HTML entity, a
URL urllib must parse) calls the Python rule itself, so the two agree on every input: the rules
stay defined once, in :mod:`laion_hf.extract.rules`, and tests/extract/test_compiled_rules.py
compares both on real LAION captions and URLs and on fuzzed links.
"""

from libc.string cimport memcmp

from laion_hf.extract import rules

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object text)
    void* PyUnicode_DATA(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    object PyUnicode_FromStringAndSize(const char* data, Py_ssize_t size)

cdef str IMG_PATH = rules.IMG_PATH
cdef str NO_ALT = rules.NO_ALT
cdef str BAD_URL = rules.BAD_URL
cdef str DATA_URL = rules.DATA_URL
cdef str JAVASCRIPT_URL = rules.JAVASCRIPT_URL
cdef str SVG = rules.SVG
cdef str GIF = rules.GIF
cdef str LONG_HOSTNAME = rules.LONG_HOSTNAME
cdef str SHORT_CAPTION = rules.SHORT_CAPTION
cdef str DUPLICATE_IN_FILE = rules.DUPLICATE_IN_FILE
cdef Py_ssize_t MAX_TEXT = rules.MAX_TEXT
cdef enum:
    CAPTION_BUFFER = 2000
assert MAX_TEXT == CAPTION_BUFFER, "rules.MAX_TEXT changed: change CAPTION_BUFFER with it"
cdef Py_ssize_t MIN_CAPTION = rules.MIN_CAPTION
cdef Py_ssize_t MAX_HOSTNAME = rules.MAX_HOSTNAME
cdef object _url_rejection = rules.url_rejection
cdef object _clean_caption = rules.clean_caption
cdef object _no_html_entity = rules.no_html_entity


cdef inline char _lower(char c) noexcept:
    return c + 32 if b"A" <= c <= b"Z" else c


cdef inline bint _starts_lower(const char* text, Py_ssize_t n, const char* prefix, Py_ssize_t k) noexcept:
    """ASCII ``text[:k].lower() == prefix`` (``prefix`` lower-case)."""
    cdef Py_ssize_t i
    if n < k:
        return False
    for i in range(k):
        if _lower(text[i]) != prefix[i]:
            return False
    return True


cdef inline bint _ends_lower(const char* text, Py_ssize_t start, Py_ssize_t end, const char* suffix) noexcept:
    """ASCII ``text[start:end].lower().endswith(suffix)`` for a 4-character ``suffix``."""
    cdef Py_ssize_t i
    if end - start < 4:
        return False
    for i in range(4):
        if _lower(text[end - 4 + i]) != suffix[i]:
            return False
    return True


cdef inline bint _in(char c, const char* chars) noexcept:
    while chars[0]:
        if chars[0] == c:
            return True
        chars += 1
    return False


cdef inline bint _host_char(char c) noexcept:
    """``[A-Za-z0-9.\\-_~%!$&'()*+,;=]`` of ``rules._PLAIN_HTTP``."""
    return (b"a" <= c <= b"z") or (b"A" <= c <= b"Z") or (b"0" <= c <= b"9") or _in(c, b".-_~%!$&'()*+,;=")


cdef inline bint _plain(const char* text, Py_ssize_t n) noexcept:
    """``rules._plain`` of an ASCII text: printable, no space, no backslash, no ``/.``."""
    cdef Py_ssize_t i
    cdef char c
    for i in range(n):
        c = text[i]
        if c <= b" " or c > b"~" or c == b"\\" or (c == b"." and i > 0 and text[i - 1] == b"/"):
            return False
    return True


cdef bint _relative_plain(const char* text, Py_ssize_t n) noexcept:
    """``rules._RELATIVE_PLAIN.match`` of an ASCII text."""
    cdef Py_ssize_t i = 1
    if n == 0 or _in(text[0], b"./?#:"):
        return False
    while i < n and not _in(text[i], b"/?#:"):
        i += 1
    if i < n and text[i] == b":":
        return False
    while i < n and text[i] == b"/":
        if i + 1 < n and not _in(text[i + 1], b"/?#"):
            i += 2
            while i < n and not _in(text[i], b"/?#"):
                i += 1
        else:
            i += 1  # a trailing slash
            break
    return i == n or text[i] == b"?" or text[i] == b"#"


cdef object _resolve(str src, resolver, object scheme, object origin, object directory):
    """``resolver.resolve(src)``: its string shortcuts for ASCII links, else the Python method."""
    cdef const char* text
    cdef Py_ssize_t n
    if PyUnicode_IS_ASCII(src):
        text = <const char*> PyUnicode_DATA(src)
        n = PyUnicode_GET_LENGTH(src)
        if (n >= 7 and memcmp(text, b"http://", 7) == 0) or (n >= 8 and memcmp(text, b"https://", 8) == 0):
            return src
        if origin is not None and _plain(text, n):
            if n >= 2 and text[0] == b"/" and text[1] == b"/":
                if n > 2 and ((b"a" <= text[2] <= b"z") or (b"A" <= text[2] <= b"Z") or (b"0" <= text[2] <= b"9")):
                    return f"{scheme}:{src}"
            elif n >= 1 and text[0] == b"/":
                return origin + src
            elif _relative_plain(text, n):
                return directory + src
    return resolver.resolve(src)


cdef object _url_rule(str url):
    """``rules.url_rejection(url)``: decided here for a plain ASCII http(s) URL, else by the Python rule."""
    cdef const char* text
    cdef Py_ssize_t n, i, host_start, host_end, path_start
    cdef char c
    if not PyUnicode_IS_ASCII(url):
        return _url_rejection(url)
    text = <const char*> PyUnicode_DATA(url)
    n = PyUnicode_GET_LENGTH(url)
    if not _starts_lower(text, n, b"http", 4):
        return _url_rejection(url)
    i = 4
    if i < n and _lower(text[i]) == b"s":
        i += 1
    if not (i + 3 <= n and text[i] == b":" and text[i + 1] == b"/" and text[i + 2] == b"/"):
        return _url_rejection(url)
    i += 3
    host_start = i
    while i < n and _host_char(text[i]):
        i += 1
    host_end = i
    if i < n and text[i] == b":":
        i += 1
        while i < n and b"0" <= text[i] <= b"9":
            i += 1
    if host_end == host_start or not (i == n or _in(text[i], b"/?#")):
        return _url_rejection(url)
    path_start = i
    while i < n:
        c = text[i]
        if c == b"?" or c == b"#":
            break
        if c == b"\\" or c == b" " or (b"\t" <= c <= b"\r") or (b"\x1c" <= c <= b"\x1f"):
            return _url_rejection(url)  # \s or a backslash: urlsplit decides
        i += 1
    if _ends_lower(text, path_start, i, b".svg"):
        return SVG
    if _ends_lower(text, path_start, i, b".gif"):
        return GIF
    if host_end - host_start > MAX_HOSTNAME:
        return LONG_HOSTNAME
    return None


cdef object _caption(str alt):
    """``rules.clean_caption(alt)``: done here for printable ASCII without an HTML entity, else by the Python rule."""
    cdef const char* text
    cdef Py_ssize_t n, i, size = 0
    cdef char c
    cdef bint ampersand = False, space = True
    cdef char out[CAPTION_BUFFER]
    if not PyUnicode_IS_ASCII(alt):
        return _clean_caption(alt)
    text = <const char*> PyUnicode_DATA(alt)
    n = PyUnicode_GET_LENGTH(alt)
    for i in range(n):
        c = text[i]
        if c < b" " or c > b"~":
            return _clean_caption(alt)
        if c == b"&":
            ampersand = True
    if ampersand and not _no_html_entity(alt):
        return _clean_caption(alt)
    for i in range(n):  # " ".join(alt.split())[:MAX_TEXT]: runs of spaces -> one, ends stripped
        c = text[i]
        if c == b" ":
            space = True
            continue
        if space and size:
            if size == MAX_TEXT:
                break
            out[size] = b" "
            size += 1
        space = False
        if size == MAX_TEXT:
            break
        out[size] = c
        size += 1
    return alt if size == n else PyUnicode_FromStringAndSize(out, size)  # same length: nothing was removed


def page_pairs(links, resolver, set seen, dict dropped):
    """Every ``IMG@/src`` link of a page through LAION's rules: ``(new pairs, IMG@/src links)``.

    See :func:`laion_hf.extract.rules.page_pairs`, whose result this equals.
    """
    cdef list kept = []
    cdef Py_ssize_t img_links = 0
    cdef object scheme = resolver.scheme, origin = resolver.origin, directory = resolver.directory
    cdef object alt, src, url, reason, caption, pair
    cdef const char* head
    cdef Py_ssize_t n
    for link in links:
        if type(link) is not dict or (<dict> link).get("path") != IMG_PATH:
            continue
        img_links += 1
        alt = (<dict> link).get("alt")
        if not isinstance(alt, str) or not alt:
            reason = NO_ALT
        else:
            src = (<dict> link).get("url")
            if not isinstance(src, str):
                reason = BAD_URL
            else:
                reason = None
                if PyUnicode_IS_ASCII(src):
                    head = <const char*> PyUnicode_DATA(src)
                    n = PyUnicode_GET_LENGTH(src)
                    if _starts_lower(head, n, b"data:", 5):
                        reason = DATA_URL
                    elif _starts_lower(head, n, b"javascript:", 11):
                        reason = JAVASCRIPT_URL
                else:
                    lowered = src[:11].lower()
                    if lowered.startswith("data:"):
                        reason = DATA_URL
                    elif lowered == "javascript:":
                        reason = JAVASCRIPT_URL
                if reason is None:
                    url = _resolve(src, resolver, scheme, origin, directory)
                    if url is None:
                        reason = BAD_URL
                    else:
                        reason = _url_rule(url)
                        if reason is None:
                            caption = _caption(alt)
                            if len(caption) < MIN_CAPTION:
                                reason = SHORT_CAPTION
                            else:
                                pair = (url[:MAX_TEXT], caption)
                                if pair in seen:
                                    reason = DUPLICATE_IN_FILE
                                else:
                                    seen.add(pair)
                                    kept.append(pair)
                                    continue
        dropped[reason] = dropped.get(reason, 0) + 1
    return kept, img_links
