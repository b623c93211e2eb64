"""TDMRep (W3C TDM Reservation Protocol, Community Group final report, 2024): ``/.well-known/tdmrep.json``.

The file is a JSON array of rules ``{"location": "/images/*", "tdm-reservation": 1,
"tdm-policy": "https://..."}``; the first rule whose ``location`` matches a
URL's path applies ("the most specific match is the first in sequence"), with
robots.txt's pattern syntax (``*`` any characters, a final ``$`` the end). A
``tdm-reservation`` of 1 reserves text-and-data-mining rights: the URL is not
downloaded. Any other value, a rule without a text ``location``, or a file
that is not such an array declares nothing (the protocol treats a missing or
broken file as "not implemented"). Only the first :data:`MAX_RULES` rules are
read, and patterns are matched without regular expressions, so a hostile file
costs linear time per URL. The ``tdm-reservation`` response header is judged in
the fetch (:mod:`laion_hf.download.optout`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from laion_hf.download.sites import FOUND, SiteFile

TDMREP_PATH = "/.well-known/tdmrep.json"
TDMREP_MAX_BYTES = 500 * 1024
MAX_RULES = 1000
TDMREP = "tdmrep"


def _path_of(target: str) -> str:
    """The decoded path and query of a URL, or of a path and query."""
    if "://" in target:
        parts = urlsplit(target)
        target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
    return unquote(target)


def pattern_matches(pattern: str, path: str) -> bool:
    """robots.txt-style matching: ``pattern`` is a prefix of ``path``, ``*`` any run of characters, final ``$`` the end."""
    anchored = pattern.endswith("$")
    parts = (pattern[:-1] if anchored else pattern).split("*")
    if not path.startswith(parts[0]):
        return False
    position = len(parts[0])
    for part in parts[1:-1]:
        found = path.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    if len(parts) == 1:
        return not anchored or position == len(path)
    last = parts[-1]
    if anchored:
        return path.endswith(last) and len(path) - len(last) >= position
    return path.find(last, position) >= 0


@dataclass(frozen=True)
class TdmRule:
    location: str
    reservation: int | None
    policy: str | None


def parse_rules(text: str) -> list[TdmRule]:
    """The rules of a tdmrep.json text (none if it is not a JSON array of rule objects)."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if not isinstance(data, list):
        return []
    rules = []
    for item in data[:MAX_RULES]:
        if not isinstance(item, dict) or not isinstance(item.get("location"), str):
            continue
        reservation = item.get("tdm-reservation")
        policy = item.get("tdm-policy")
        rules.append(TdmRule(
            unquote(item["location"].strip()),
            reservation if reservation in (0, 1) and not isinstance(reservation, bool) else None,
            policy if isinstance(policy, str) else None,
        ))
    return rules


class TdmRepRules:
    """One origin's tdmrep.json, ready to judge URLs."""

    def __init__(self, file: SiteFile) -> None:
        self.file = file
        self.rules = parse_rules(file.text) if file.state == FOUND else []

    def verdict(self, target: str) -> tuple[str, str] | None:
        """``(tdmrep, evidence)`` if the first rule matching ``target`` (a URL, or its path and query) reserves TDM
        rights, else None."""
        if not self.rules:
            return None
        path = _path_of(target)
        for index, rule in enumerate(self.rules):
            if pattern_matches(rule.location, path):
                if rule.reservation != 1:
                    return None
                policy = f", tdm-policy {rule.policy}" if rule.policy else ""
                return TDMREP, (
                    f"{self.file.url} (sha256 {self.file.sha256}) rule {index} location {rule.location!r}: "
                    f"tdm-reservation 1{policy}"
                )
        return None
