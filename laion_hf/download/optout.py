"""Opt-outs a response carries in its headers: ``X-Robots-Tag`` directives and the TDMRep ``tdm-reservation``.

An ``X-Robots-Tag`` value is either a directive list (``noai, noimageai``)
that applies to every crawler, or one scoped to a user-agent token
(``otherbot: noai``) that applies only when it names one of the tokens we
answer to (our own and the AI-crawler tokens, :mod:`laion_hf.download.agents`).
img2dataset's own ``is_disallowed`` is not imported: importing any part of
img2dataset loads cv2 and albumentations (seconds of CPU in every worker) for
a dozen lines of header parsing.

``tdm-reservation: 1`` (W3C TDMRep, section 3.2) reserves text-and-data-mining
rights on the resource; its ``tdm-policy`` (where to ask for a licence) is
kept as evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.message import Message

#: img2dataset's default directives, plus ``noml`` (img2dataset#365: "no machine learning", DeviantArt and others).
DISALLOWED_HEADER_DIRECTIVES = ("noai", "noimageai", "noml", "noindex", "noimageindex")
OPT_OUT_MESSAGE = "Use of image disallowed by X-Robots-Tag directive"  # img2dataset's wording
X_ROBOTS_TAG = "x-robots-tag"
TDM_RESERVATION = "tdm-reservation"
_MAX_EVIDENCE = 200  # characters of a header value kept as evidence


def _quoted(value: str) -> str:
    value = " ".join(value.split())
    return value if len(value) <= _MAX_EVIDENCE else value[:_MAX_EVIDENCE] + "..."


class HeaderOptOut:
    """Decides whether a response's headers forbid using the image, and says which header did.

    ``directives``: the ``X-Robots-Tag`` directives honoured (none: the header
    is ignored); ``tokens``: the user-agent tokens a scoped value must name to
    apply to us; ``tdm_reservation``: honour ``tdm-reservation: 1``.
    """

    def __init__(
        self,
        directives: Iterable[str] = DISALLOWED_HEADER_DIRECTIVES,
        tokens: Iterable[str] = (),
        tdm_reservation: bool = False,
    ) -> None:
        self.directives = frozenset(d.strip().lower() for d in directives if d.strip())
        self.tokens = frozenset(t.strip().lower() for t in tokens if t.strip())
        self.tdm_reservation = tdm_reservation

    def directive(self, values: Iterable[str]) -> str | None:
        """The first disallowed directive of ``values`` that applies to us (unscoped, or scoped to our tokens)."""
        if not self.directives:
            return None
        for value in values:
            scope, scoped, directives = value.partition(":")
            if not scoped:
                directives = value
            elif scope.strip().lower() not in self.tokens:
                continue
            for directive in directives.split(","):
                if directive.strip().lower() in self.directives:
                    return directive.strip().lower()
        return None

    def forbids(self, values: Iterable[str]) -> bool:
        """True if any value, unscoped or scoped to one of our tokens, holds a disallowed directive."""
        return self.directive(values) is not None

    def reason(self, headers: Message) -> tuple[str, str] | None:
        """``(reason, evidence)`` if the headers forbid the use: ``x-robots-tag:<directive>`` or ``tdm-reservation``."""
        values = headers.get_all("X-Robots-Tag") or []
        directive = self.directive(values)
        if directive is not None:
            return f"{X_ROBOTS_TAG}:{directive}", f"{OPT_OUT_MESSAGE}: X-Robots-Tag: {_quoted(', '.join(values))}"
        if self.tdm_reservation and (headers.get("tdm-reservation") or "").strip() == "1":
            policy = headers.get("tdm-policy")
            evidence = "TDM rights reserved by header tdm-reservation: 1"
            return TDM_RESERVATION, evidence + (f" (tdm-policy: {_quoted(policy)})" if policy else "")
        return None
