"""The demo's other hosts: sites that tell dataset builders no, and one that asks them to slow down.

Three more loopback image servers beside the demo's own (127.0.0.2-4):

- a site whose robots.txt keeps AI crawlers (CCBot, GPTBot) out of ``/members/``;
- a news site whose ``/.well-known/tdmrep.json`` reserves TDM rights on ``/press/``,
  and whose other images carry a ``tdm-reservation: 1`` header;
- a busy host that answers every image ``429 Too Many Requests`` with
  ``Retry-After: 1`` once before serving it.

Images with ``X-Robots-Tag: noml`` are served by the first. The download must
catch each opt-out under its reason (``robots-txt``, ``tdmrep``,
``tdm-reservation``, ``x-robots-tag:noml``) and still get the busy host's images.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from laion_hf.testing.image_server import ImageServer

#: The planted cases these hosts serve.
CONSENT_CASES = ("robots-txt", "tdmrep", "tdm-header", "noml", "busy-host")
ROBOTS_TXT = "User-agent: *\nAllow: /\n\nUser-agent: CCBot\nUser-agent: GPTBot\nDisallow: /members/\n"
TDM_POLICY = "https://news.example/tdm-policy.json"


class DemoSites:
    """The three hosts, started and stopped together (a context manager)."""

    def __enter__(self) -> DemoSites:
        self._stack = ExitStack()
        self.members = self._stack.enter_context(ImageServer("127.0.0.2"))
        self.news = self._stack.enter_context(ImageServer("127.0.0.3"))
        self.busy = self._stack.enter_context(ImageServer("127.0.0.4"))
        self.members.robots_txt(ROBOTS_TXT)
        self.news.tdmrep([{"location": "/press/*", "tdm-reservation": 1, "tdm-policy": TDM_POLICY}])
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stack.close()

    def serve(self, case: str, index: int, data: bytes) -> str:
        """The URL of image ``data`` served as planted ``case`` (one of :data:`CONSENT_CASES`)."""
        if case == "robots-txt":
            return self.members.image(f"/members/{index}.jpg", data)
        if case == "noml":
            return self.members.no_ai(f"/img/{index}.jpg", data, directive="noml")
        if case == "tdmrep":
            return self.news.image(f"/press/{index}.jpg", data)
        if case == "tdm-header":
            return self.news.tdm_reserved(f"/img/{index}.jpg", data, policy=TDM_POLICY)
        if case == "busy-host":
            return self.busy.rate_limited(f"/img/{index}.jpg", data, refusals=1, retry_after="1")
        raise ValueError(f"not a consent case: {case}")
