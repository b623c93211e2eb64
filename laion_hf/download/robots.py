"""robots.txt (RFC 9309) for a download: what a fetch answered, and which URLs its rules disallow to us.

The rules are parsed by Protego (Scrapy's RFC 9309 parser: groups merged per
user agent, the most specific group for a token, longest match with Allow
winning ties, ``*`` and ``$`` patterns). What the fetch answered decides
before any rule does (RFC 9309 section 2.3.1):

- 2xx: the rules, parsed from at most :data:`ROBOTS_MAX_BYTES` (the RFC asks
  parsers for at least 500 KiB and lets them ignore the rest);
- 4xx (429 aside), or more redirects than the fetch follows: no robots.txt,
  everything allowed;
- 5xx, 429 (a server asking to slow down, as Google treats it) or no answer
  (DNS, connection, timeout, deadline): "complete disallow", kept as
  ``robots-txt-unreachable``, a failure rather than the site's opt-out.

A URL is disallowed when the rules forbid it to any of the tokens
(:mod:`laion_hf.download.agents`); the evidence names the file, its sha256 and
the token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from protego import Protego

from laion_hf.download.sites import ABSENT, FOUND, UNREACHABLE, SiteFile

ROBOTS_PATH = "/robots.txt"
ROBOTS_MAX_BYTES = 500 * 1024
ROBOTS_TXT = "robots-txt"  # a rule disallows the URL
ROBOTS_TXT_UNREACHABLE = "robots-txt-unreachable"  # no answer or a server error: complete disallow
_USER_AGENT_LINE = re.compile(r"^[ \t]*user[-_ ]?agent[ \t]*:[ \t]*([^#\r\n]*)", re.IGNORECASE | re.MULTILINE)


def tokens_to_check(text: str, tokens: Sequence[str]) -> tuple[str, ...]:
    """One token for each set of rules the tokens can get: the first of the tokens the same ``User-agent`` names match.

    The group a parser picks for a token depends only on which ``User-agent``
    names match it (a name matches when it, wildcards removed, occurs in the
    token: a superset of Protego's rule); tokens matched by the same names get
    the same rules, so one of them is asked for all. Every token no name
    matches gets the ``*`` group's rules.
    """
    names = {m.group(1).strip().lower().replace("*", "") for m in _USER_AGENT_LINE.finditer(text)} - {""}
    asked: dict[frozenset[str], str] = {}
    for token in tokens:
        asked.setdefault(frozenset(name for name in names if name in token.lower()), token)
    return tuple(asked.values())


def robots_state(status: int | None, reason: str | None) -> str:
    """What a robots.txt answer means (the body aside): :data:`ABSENT` or :data:`UNREACHABLE`."""
    if reason == "too-many-redirects":  # RFC 9309 2.3.1.2: MAY be treated as unavailable
        return ABSENT
    if status is not None and 400 <= status < 500 and status != 429:
        return ABSENT
    return UNREACHABLE


class RobotsRules:
    """One origin's robots.txt, ready to judge URLs for ``tokens``."""

    def __init__(self, file: SiteFile, tokens: Sequence[str]) -> None:
        self.file = file
        self.tokens = tuple(tokens)
        self._parser = Protego.parse(file.text) if file.state == FOUND else None
        self._asked = tokens_to_check(file.text, self.tokens) if self._parser else ()

    def verdict(self, target: str) -> tuple[str, str] | None:
        """``(reason, evidence)`` if robots.txt keeps us from ``target`` (a URL, or its path and query), else None."""
        if self.file.state == UNREACHABLE:
            return ROBOTS_TXT_UNREACHABLE, (
                f"{self.file.url}: {self.file.detail}; an unreachable robots.txt means complete disallow (RFC 9309 2.3.1.4)"
            )
        if self._parser is None:
            return None
        for token in self._asked:
            if not self._parser.can_fetch(target, token):
                return ROBOTS_TXT, f"{self.file.url} (sha256 {self.file.sha256}) disallows it for user-agent {token}"
        return None
