"""Opt-outs a response carries in its headers: ``X-Robots-Tag`` directives, as img2dataset honours them.

A value is either a directive list (``noai, noimageai``) that applies to every
crawler, or one scoped to a user-agent token (``mybot: noai``) that applies
only when it names ours. img2dataset's own ``is_disallowed`` is not imported:
importing any part of img2dataset loads cv2 and albumentations (seconds of CPU
in every worker) for a dozen lines of header parsing.
"""

from __future__ import annotations

from collections.abc import Iterable

DISALLOWED_HEADER_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")
OPT_OUT_MESSAGE = "Use of image disallowed by X-Robots-Tag directive"  # img2dataset's wording


class HeaderOptOut:
    """Decides whether ``X-Robots-Tag`` values forbid using the image."""

    def __init__(self, directives: Iterable[str] = DISALLOWED_HEADER_DIRECTIVES, user_agent_token: str | None = None) -> None:
        self.directives = frozenset(d.strip().lower() for d in directives if d.strip())
        self.user_agent_token = user_agent_token.strip().lower() if user_agent_token else None

    def forbids(self, values: Iterable[str]) -> bool:
        """True if any value, unscoped or scoped to our token, holds a disallowed directive."""
        if not self.directives:
            return False
        for value in values:
            scope, scoped, directives = value.partition(":")
            if not scoped:
                directives = value
            elif scope.strip().lower() != self.user_agent_token:
                continue
            if any(d.strip().lower() in self.directives for d in directives.split(",")):
                return True
        return False
