"""The Hub's answers as user errors: what went wrong, what to do, and never the token.

A server or a proxy may echo the request's ``Authorization`` header in an error
body (``request rejected (you sent Bearer hf_...)``); every message that passes
a server's text through :func:`redact` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from laion_hf.core.errors import UserError

REDACTED = "[token]"
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;)]+")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}")  # the shape of a Hub user access token


class HubError(UserError, RuntimeError):
    """The Hub refused or failed a request for a reason the user can act on."""


class HubAuthError(HubError):
    """The Hub refused the token (missing, invalid, or without the needed access)."""


class HubRateLimitError(HubError):
    """The Hub rate-limited us; re-running later resumes."""


def redact(text: str, token: str | bool | None = None) -> str:
    """``text`` without the token: the one given, the one huggingface_hub would send, any bearer or hf_ token."""
    from huggingface_hub import get_token

    for secret in (token if isinstance(token, str) else None, None if token is False else get_token()):
        if secret:
            text = text.replace(secret, REDACTED)
    return _HF_TOKEN.sub(REDACTED, _BEARER.sub(rf"\g<1>{REDACTED}", text))


def http_error(exc, what: str, endpoint: str, token: str | bool | None = None, resumable: bool = False) -> HubError:
    """The :class:`HubError` for a huggingface_hub ``HfHubHTTPError`` on ``what`` (a repo id)."""
    status = exc.response.status_code if exc.response is not None else None
    again = " Re-run the same command: files already committed are skipped." if resumable else ""
    if status in (401, 403):
        return HubAuthError(
            f"{what}: {endpoint} refused the token (HTTP {status}). Set HF_TOKEN or run `hf auth login` "
            "with a token that has the access needed (the token is not shown here)."
        )
    if status == 429:
        retry = exc.response.headers.get("Retry-After")
        wait = f" in {retry} s" if retry else " later"
        return HubRateLimitError(
            f"{what}: {endpoint} rate-limited the request (HTTP 429). Re-run the same command{wait}"
            + (": files already committed are skipped." if resumable else ".")
        )
    message = exc.server_message or str(exc).splitlines()[0]
    return HubError(redact(f"{what}: the Hub answered HTTP {status}: {message}", token) + again)


@contextmanager
def hub_http_errors(
    what: str, endpoint: str | None = None, token: str | bool | None = None, resumable: bool = False
) -> Iterator[None]:
    """Turn a Hub HTTP error inside the block into a :class:`HubError` (see :func:`http_error`).

    ``endpoint`` defaults to the one huggingface_hub talks to (``HF_ENDPOINT``).
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as exc:
        raise http_error(exc, what, endpoint or constants.ENDPOINT, token, resumable) from None
