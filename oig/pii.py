"""PII scrubbing: emails, phone numbers, IP addresses and credit-card numbers become placeholders.

OIG shipped its sources' PII unchanged. Here every message is scrubbed before
scoring and dedup (so two rows that differ only in an address dedup together);
each row records how many values were replaced (``pii_replaced``) and which
kinds (``pii:<kind>`` flags), which is what the build report counts.
Card numbers are replaced only when their digits pass the Luhn check, so order
numbers and other long digit runs survive.
"""

from __future__ import annotations

import re
from collections import Counter

import pyarrow as pa

from laion_hf.stages.base import Stage, alive_mask
from oig.schema import format_text

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "credit_card": "[CREDIT_CARD]",
    "ip_address": "[IP_ADDRESS]",
    "phone": "[PHONE]",
}

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![0-9A-Fa-f:])")
# Not part of a longer digit run (a card number that failed Luhn is not a phone number).
_PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,4}(?![ .-]?\d)(?!\w)"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def scrub(text: str) -> tuple[str, Counter[str]]:
    """``text`` with PII replaced by placeholders, and how many of each kind were replaced."""
    counts: Counter[str] = Counter()

    def replace(kind: str):
        def substitute(match: re.Match) -> str:
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        return substitute

    def card(match: re.Match) -> str:
        digits = re.sub(r"\D", "", match.group())
        if not luhn_valid(digits):
            return match.group()
        counts["credit_card"] += 1
        return PLACEHOLDERS["credit_card"]

    text = _EMAIL.sub(replace("email"), text)
    text = _CARD.sub(card, text)
    text = _IPV4.sub(replace("ip_address"), text)
    text = _IPV6.sub(replace("ip_address"), text)
    text = _PHONE.sub(lambda m: replace("phone")(m) if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text)
    return text, counts


class PiiScrubber(Stage):
    """Replace PII in every message of live rows; rewrite ``text`` from the scrubbed messages."""

    name = "pii"

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
                message["content"], found = scrub(message["content"])
                kinds.update(found)
            if kinds:
                texts[row] = format_text(messages[row])
                replaced[row] = (replaced[row] or 0) + sum(kinds.values())
                flags[row] = [*(flags[row] or []), *(f"pii:{kind}" for kind in sorted(kinds))]
        for name, values in (("messages", messages), ("text", texts), ("pii_replaced", replaced), ("flags", flags)):
            index = batch.column_names.index(name)
            batch = batch.set_column(index, batch.schema.field(name), pa.array(values, batch.schema.field(name).type))
        return batch
