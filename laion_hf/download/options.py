"""What a download is asked to do: its options with their documented defaults, statuses and errors."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from laion_hf.core.errors import UserError
from laion_hf.download.agents import AI_AGENT_TOKENS, OUR_TOKEN
from laion_hf.download.fetch import USER_AGENT, FetchLimits
from laion_hf.download.optout import DISALLOWED_HEADER_DIRECTIVES
from laion_hf.download.politeness import HostLimits

MIN_IMAGE_BYTES = 5 * 1024  # LAION dropped images under 5 KB
MAX_IMAGE_PIXELS = 89_478_484  # ... and over this many pixels (Pillow's decompression-bomb limit)
#: Bytes per pixel behind the default body cap: 89,478,484 pixels x 3 = 268,435,452 bytes (256 MiB), an 8-bit
#: RGB image at the pixel limit stored with no compression at all; no image LAION keeps is larger on the wire.
BODY_BYTES_PER_PIXEL = 3
DEADLINE_TIMEOUTS = 3  # default deadline of a whole request, in per-operation timeouts

RESIZE_MODES = ("no", "keep_ratio", "center_crop", "border", "keep_ratio_largest")  # img2dataset's
ENCODE_FORMATS = ("jpg", "png", "webp")

# img2dataset's statuses, plus ours for what the address policy refused.
SUCCESS = "success"
FAILED_TO_DOWNLOAD = "failed_to_download"
FAILED_CHECKS = "failed_to_resize"  # img2dataset's status for a fetched image that fails its image checks
REFUSED = "refused"
OPTED_OUT = "opted-out"  # the site said no: robots.txt, tdmrep.json, X-Robots-Tag, tdm-reservation
OPT_OUT_REASONS = frozenset({"robots-txt", "tdmrep", "tdm-reservation"})  # and x-robots-tag:<directive>


def is_opt_out(reason: str) -> bool:
    """Whether a download's ``error_reason`` is a site's opt-out (``x-robots-tag`` alone: downloads before the
    directive was named)."""
    return reason in OPT_OUT_REASONS or reason.split(":", 1)[0] == "x-robots-tag"
ERROR_REASON = "error_reason"

#: What a download can respect (``--respect``): robots.txt, TDMRep (tdmrep.json and the tdm-reservation header),
#: X-Robots-Tag directives. ``robots`` and ``tdmrep`` are judged per origin before fetching (the consent step);
#: the headers in the fetch.
RESPECT_RULES = ("robots", "tdmrep", "x-robots-tag")
HOST_RULES = frozenset({"robots", "tdmrep"})


class DownloadError(UserError):
    """The download cannot start or did not finish (the message says what to do)."""


@dataclass(frozen=True)
class DownloadOptions:
    """Everything a download needs besides its inputs; picklable for worker processes.

    ``timeout`` bounds each connect and read (as in img2dataset); ``deadline``
    bounds a whole request, redirects and body included (default
    ``3 x timeout``); ``max_body_bytes`` caps a body (default
    ``3 x max_image_pixels``, see :data:`BODY_BYTES_PER_PIXEL`).
    ``allowed_networks`` (CIDR strings) may be contacted although not global.

    Consent: ``respect`` names the rules honoured (:data:`RESPECT_RULES`, all
    by default); robots.txt groups and scoped ``X-Robots-Tag`` values apply
    for our token (``user_agent_token``, else ``laion-hf``) and each of
    ``agent_tokens`` (:mod:`laion_hf.download.agents`); ``site_cache_dir``
    holds the origins' robots.txt and tdmrep.json answers shared by the
    workers (default: the output's hidden ``.laion-hf/sites``). Politeness:
    ``host_concurrency`` requests at once and ``host_rate`` requests a second
    per origin and download process, ``max_retry_after`` the longest
    ``Retry-After`` waited for (:class:`~laion_hf.download.politeness.HostLimits`).
    """

    allow_private_network: bool = False
    allowed_networks: tuple[str, ...] = ()
    processes: int = 1
    threads: int = 16
    timeout: float = 10.0
    deadline: float | None = None
    max_body_bytes: int | None = None
    max_redirects: int = 10
    retries: int = 0
    rows_per_shard: int = 10_000
    resize_mode: str = "no"
    image_size: int = 256
    encode_format: str = "jpg"
    min_image_bytes: int = MIN_IMAGE_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS
    min_image_side: int = 0
    disallowed_header_directives: tuple[str, ...] = DISALLOWED_HEADER_DIRECTIVES
    user_agent_token: str | None = None
    respect: tuple[str, ...] = RESPECT_RULES
    agent_tokens: tuple[str, ...] = AI_AGENT_TOKENS
    site_cache_dir: str | None = None
    host_concurrency: int = HostLimits.concurrency
    host_rate: float = HostLimits.rate
    max_retry_after: float = HostLimits.max_retry_after

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise DownloadError(f"resize mode {self.resize_mode!r}: choose one of {', '.join(RESIZE_MODES)}")
        if self.encode_format not in ENCODE_FORMATS:
            raise DownloadError(f"encode format {self.encode_format!r}: choose jpg, png or webp")
        for network in self.allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise DownloadError(f"allowed network {network!r}: {exc}") from None
        for name in ("timeout", "deadline", "max_body_bytes", "host_concurrency", "host_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise DownloadError(f"{name} {value!r}: must be positive")
        unknown = sorted(set(self.respect) - set(RESPECT_RULES))
        if unknown:
            raise DownloadError(f"respect {', '.join(unknown)}: choose among {', '.join(RESPECT_RULES)}")

    @property
    def tokens(self) -> tuple[str, ...]:
        """The user-agent tokens robots.txt groups and scoped X-Robots-Tag values are read for: ours first."""
        return (self.user_agent_token or OUR_TOKEN, *self.agent_tokens)

    @property
    def user_agent(self) -> str:
        """img2dataset's browser-like User-Agent, with ``user_agent_token`` appended as img2dataset does."""
        if not self.user_agent_token:
            return USER_AGENT
        return f"{USER_AGENT} (compatible; {self.user_agent_token}; +https://github.com/rom1504/img2dataset)"

    @property
    def checks_hosts(self) -> bool:
        """Whether the origins' robots.txt or tdmrep.json are consulted before fetching."""
        return bool(HOST_RULES & set(self.respect))

    @property
    def host_limits(self) -> HostLimits:
        return HostLimits(concurrency=self.host_concurrency, rate=self.host_rate, max_retry_after=self.max_retry_after)

    @property
    def keeps_original_bytes(self) -> bool:
        return self.resize_mode == "no"

    @property
    def limits(self) -> FetchLimits:
        return FetchLimits(
            timeout=self.timeout,
            deadline=self.deadline if self.deadline is not None else DEADLINE_TIMEOUTS * self.timeout,
            max_body_bytes=self.max_body_bytes if self.max_body_bytes is not None else BODY_BYTES_PER_PIXEL * self.max_image_pixels,
            max_redirects=self.max_redirects,
        )
