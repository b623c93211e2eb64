"""PII scrubbing: emails, IP addresses, payment-card numbers and phone numbers become placeholders.

OIG shipped its sources' PII unchanged. Here every message is scrubbed before
scoring and dedup (so two rows that differ only in an address dedup together);
each row records how many values were replaced (``pii_replaced``) and which
kinds (``pii:<kind>`` flags), which is what the build report counts.

Each kind has one detector run on the original text; spans are taken in the
order email, IP, card, phone and a later kind never overlaps an earlier one:

- emails: a regex over the usual local-part and domain characters (Unicode letters included);
- IPv4 / IPv6: a candidate regex (an IPv4 may end a sentence), confirmed by :mod:`ipaddress`;
- cards: 12-19 digits that pass the Luhn check *and* start with a card network's
  prefix, so ISBNs, order numbers and other long digit runs survive;
- phones: Google's libphonenumber (the ``phonenumbers`` port) finds numbers that are
  *possible* in any of ``regions`` (``+`` numbers in every region); a national
  number is kept as a phone only if it is grouped the way its country writes
  numbers, which keeps the unassigned ``555`` and drama ranges that examples and
  fiction use, and drops dates, year ranges, ISBNs, versions and decimals.

Precision and recall per kind on a labelled set of real-world formats and
look-alikes are measured by ``tests/oig/test_pii.py`` and recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers
import pyarrow as pa
from phonenumbers import Leniency, PhoneNumberMatcher

from laion_hf.core.errors import UserError
from laion_hf.core.stage import Stage, alive_mask
from oig.schema import format_text

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "ip_address": "[IP_ADDRESS]",
    "credit_card": "[CREDIT_CARD]",
    "phone": "[PHONE]",
}
#: Regions whose national formats are recognised by default (the largest English-language sources' countries
#: and the biggest European ones); ``+``-prefixed numbers are recognised for every region whatever this says.
DEFAULT_PHONE_REGIONS = ("US", "GB", "CA", "AU", "IN", "IE", "NZ", "ZA", "DE", "FR", "ES", "IT", "NL")

_EMAIL = re.compile(r"(?<![\w.+'-])[\w+'-]+(?:\.[\w+'-]+)*@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-])")
_IPV4 = re.compile(
    r"(?<![\w.])(?<!version )(?<!Version )(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d|\w)"
)
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?:%\w+)?(?![\w:])")
_CARD = re.compile(r"(?<![\d+-])\d(?:[ -]?\d){12,18}(?![\d-])")
# a quick test that a text may hold a phone number at all: 7 digits within a run of digits and separators
_PHONE_HINT = re.compile(r"\d(?:[\s().+/-]{0,3}\d){6}")
_SEPARATORS = re.compile(r"[\s().+/-]+")
#: Card networks' IIN prefixes and lengths: Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro.
_CARD_PREFIXES = re.compile(r"^(?:4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|6011|64[4-9]|65|35(?:2[89]|[3-8]\d)|3(?:0[0-5]|[689])|62|5[06-9]|6\d)")


@dataclass(frozen=True)
class PiiSpan:
    """One detected value: its kind and its character span in the text."""

    kind: str
    start: int
    end: int


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def is_card_number(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIXES.match(digits)) and luhn_valid(digits)


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate.split("%")[0])
    except ValueError:
        return False
    return True


def _grouped_like_a_phone(match: phonenumbers.PhoneNumberMatch) -> bool:
    """Whether a possible number is written the way phone numbers are written.

    International (``+``) numbers always are. A national number needs 9+ digits
    in 2+ groups, and every break between groups must fall where the number's
    own country breaks it (libphonenumber's international format), after an
    optional trunk prefix or country code: this tells ``555-201-4477`` and
    ``020 7946 0958`` from ``2023-01-15``, ``1914-1918``, ``0-306-40615-2`` or ``2303.08774``.
    """
    raw = match.raw_string
    if raw.startswith("+"):
        return True
    groups = [g for g in _SEPARATORS.split(raw) if g]
    digits = "".join(groups)
    national = str(match.number.national_number)
    if len(groups) < 2 or len(digits) < 9 or not digits.isdigit() or not digits.endswith(national):
        return False
    if len(groups) == 2 and "." in raw:  # a decimal number (2303.08774, 6.02214076)
        return False
    formatted = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    allowed = set(_breaks([g for g in _SEPARATORS.split(formatted) if g][1:])) | {0}  # [0] is the country code
    prefix = len(digits) - len(national)
    return all(b - prefix in allowed for b in _breaks(groups))


def _breaks(groups: list[str]) -> list[int]:
    """Digit offsets where one group ends and the next starts."""
    offsets, total = [], 0
    for group in groups[:-1]:
        total += len(group)
        offsets.append(total)
    return offsets


class PiiDetector:
    """Find PII spans in text; ``regions`` are the ISO 3166 codes whose national phone formats are tried."""

    def __init__(self, regions: Iterable[str] = DEFAULT_PHONE_REGIONS):
        self.regions = tuple(regions)
        unknown = sorted(set(self.regions) - phonenumbers.SUPPORTED_REGIONS)
        if unknown:
            raise UserError(f"pii.phone_regions: unknown region codes {unknown} (ISO 3166 alpha-2, e.g. US, GB, DE)")

    def _phones(self, text: str) -> Iterable[tuple[int, int]]:
        if not _PHONE_HINT.search(text):
            return
        for region in self.regions:
            for match in PhoneNumberMatcher(text, region, leniency=Leniency.POSSIBLE):
                if _grouped_like_a_phone(match):
                    yield match.start, match.end

    def find(self, text: str) -> list[PiiSpan]:
        """Non-overlapping spans, earlier kinds first (an email's digits are never a phone number)."""
        spans: list[PiiSpan] = []

        def add(kind: str, start: int, end: int) -> None:
            if all(end <= s.start or start >= s.end for s in spans):
                spans.append(PiiSpan(kind, start, end))

        for match in _EMAIL.finditer(text):
            add("email", match.start(), match.end())
        for pattern in (_IPV6, _IPV4):  # an IPv6 may end in an IPv4 (::ffff:192.0.2.1)
            for match in pattern.finditer(text):
                if any(c.isdigit() for c in match.group()) and _is_ip(match.group()):
                    add("ip_address", match.start(), match.end())
        for match in _CARD.finditer(text):
            if is_card_number(match.group()):
                add("credit_card", match.start(), match.end())
        for start, end in self._phones(text):
            add("phone", start, end)
        return sorted(spans, key=lambda s: s.start)

    def scrub(self, text: str) -> tuple[str, Counter[str]]:
        """``text`` with PII replaced by placeholders, and how many of each kind were replaced."""
        counts: Counter[str] = Counter()
        pieces, position = [], 0
        for span in self.find(text):
            pieces += [text[position : span.start], PLACEHOLDERS[span.kind]]
            counts[span.kind] += 1
            position = span.end
        pieces.append(text[position:])
        return "".join(pieces), counts


_DEFAULT = PiiDetector()


def scrub(text: str) -> tuple[str, Counter[str]]:
    """:meth:`PiiDetector.scrub` with the default phone regions."""
    return _DEFAULT.scrub(text)


class PiiScrubber(Stage):
    """Replace PII in every message of live rows; rewrite ``text`` from the scrubbed messages."""

    name = "pii"

    def __init__(self, regions: Iterable[str] = DEFAULT_PHONE_REGIONS):
        self.detector = PiiDetector(regions)

    def __call__(self, batch: pa.Table) -> pa.Table:
        alive = alive_mask(batch).to_pylist()
        messages = batch["messages"].to_pylist()
        texts = batch["text"].to_pylist()
        replaced = batch["pii_replaced"].to_pylist()
        flags = batch["flags"].to_pylist()
        for row, live in enumerate(alive):
            if not live:
                continue
            kinds: Counter[str] = Counter()
            for message in messages[row]:
                message["content"], found = self.detector.scrub(message["content"])
                kinds.update(found)
            if kinds:
                texts[row] = format_text(messages[row])
                replaced[row] = (replaced[row] or 0) + sum(kinds.values())
                flags[row] = [*(flags[row] or []), *(f"pii:{kind}" for kind in sorted(kinds))]
        for name, values in (("messages", messages), ("text", texts), ("pii_replaced", replaced), ("flags", flags)):
            index = batch.column_names.index(name)
            batch = batch.set_column(index, batch.schema.field(name), pa.array(values, batch.schema.field(name).type))
        return batch


def evaluate(detector: PiiDetector, examples: Iterable[dict]) -> dict[str, Counter[str]]:
    """Exact-span true/false positives and misses per kind on labelled examples.

    Each example is ``{"text": ..., "pii": [[kind, value], ...]}`` (values found
    left to right in the text). A detection counts only if kind and span both
    equal a label: a number scrubbed but for its ``(0)`` is a miss *and* a false positive.
    """
    counts: dict[str, Counter[str]] = {kind: Counter(tp=0, fp=0, fn=0) for kind in PLACEHOLDERS}
    for example in examples:
        text, labels, position = example["text"], set(), 0
        for kind, value in example["pii"]:
            start = text.index(value, position)
            labels.add(PiiSpan(kind, start, start + len(value)))
            position = start + len(value)
        found = set(detector.find(text))
        for span in found | labels:
            outcome = "tp" if span in found and span in labels else "fp" if span in found else "fn"
            counts[span.kind][outcome] += 1
    return counts
