"""Which addresses a download may connect to: URL host decoding, the address rules, pinned resolution.

A candidate URL is attacker-controlled text, so the policy decides on exactly
what the fetcher will use: the host after percent-decoding and IDNA encoding
(``http://%31%32%37.0.0.1/`` is ``127.0.0.1``), every address the name
resolves to (any non-global one refuses the host, so no answer can be
"mostly public"), and IPv6 forms that carry an IPv4 address inside (mapped,
NAT64, 6to4, Teredo) judged by that address. :meth:`AddressPolicy.check`
returns a :class:`Target` holding the checked addresses; the fetcher connects
to those and no others (DNS pinning), so a name that re-resolves elsewhere
between check and connect (DNS rebinding) changes nothing.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(family, sockaddr)`` pairs, as ``socket.getaddrinfo`` gives them.
Addresses = tuple[tuple[int, tuple], ...]
Resolver = Callable[[str, int], Addresses]

SCHEMES = {"http": 80, "https": 443}
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT; cloud metadata (100.100.100.200)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")  # LDH, plus "_" which real image hosts use
_TARGET_SAFE = "/%:@!$&'()*+,;=?~[]"  # RFC 3986 characters kept as they are in a request target
_KINDS = {
    "refused-loopback": "loopback",
    "refused-link-local": "link-local",
    "refused-private": "private",
    "refused-reserved": "reserved (not globally routable)",
}
REFUSAL_MESSAGES = {
    "refused-scheme": "only http and https URLs are downloaded",
    "refused-host": "the host is not a valid DNS name or IP address",
    **{
        reason: f"the host resolves to a {kind} address (--allow-private-network to fetch it)"
        for reason, kind in _KINDS.items()
    },
}


class Refusal(Exception):
    """A URL the policy does not fetch; ``reason`` is one of :data:`REFUSAL_MESSAGES`."""

    def __init__(self, reason: str, url: str) -> None:
        super().__init__(f"{REFUSAL_MESSAGES[reason]}: {url}")
        self.reason = reason
        self.url = url
        self.explanation = REFUSAL_MESSAGES[reason]


class Unresolvable(Exception):
    """The host name has no address (a counted ``dns-error``, never an allowed host)."""


@dataclass(frozen=True)
class Target:
    """A checked request: where to connect (pinned addresses) and what to say (host header, SNI, path)."""

    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal: the Host header and the TLS server name
    port: int
    request_target: str  # path and query, percent-encoded
    addresses: Addresses

    @property
    def default_port(self) -> int:
        return SCHEMES[self.scheme]


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, bool]:
    """The IPv4 address an IPv6 form carries, and whether the form is a pure translation of it."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, True
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), True
    if ip.sixtofour is not None:
        return ip.sixtofour, False
    if ip.teredo is not None:
        return ip.teredo[1], False  # the client behind the relay
    return None, False


def _plain_refusal(ip: IPAddress) -> str | None:
    if ip.is_loopback:
        return "refused-loopback"
    if ip.is_link_local:
        return "refused-link-local"
    if ip.is_private or ip in _SHARED_ADDRESS_SPACE or getattr(ip, "is_site_local", False):
        return "refused-private"
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "refused-reserved"
    return None


def address_refusal(ip: IPAddress, allowed_networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()) -> str | None:
    """Why ``ip`` may not be contacted (None: it is global, or in one of ``allowed_networks``).

    IPv6 forms wrapping an IPv4 address are judged by that address too:
    ``2002:7f00:1::1`` (6to4 of 127.0.0.1) is refused as loopback.
    """
    embedded, translation = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else (None, False)
    judged = [embedded] if translation else [a for a in (embedded, ip) if a is not None]
    for address in judged:
        if any(address.version == net.version and address in net for net in allowed_networks):
            continue
        reason = _plain_refusal(address)
        if reason is not None:
            return reason
    return None


def decoded_host(hostname: str) -> str | None:
    """The host the fetcher contacts, after the decoding a browser applies; None if it is not a valid one.

    Percent-escapes are decoded (``%31%32%37.0.0.1`` -> ``127.0.0.1``), the
    name lower-cased and IDNA-encoded; then it must be an IP literal or a DNS
    name of letters, digits, ``-`` and ``_``.
    """
    host = unquote(hostname).lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return ascii_host


def _request_target(path: str, query: str) -> str:
    target = quote(path or "/", safe=_TARGET_SAFE)  # spaces and non-ASCII percent-encoded, as browsers send them
    return f"{target}?{quote(query, safe=_TARGET_SAFE)}" if query else target


def parse_url(url: str | None) -> tuple[str, str, int, str]:
    """``(scheme, host, port, request_target)`` of an http(s) URL, or :class:`Refusal`."""
    try:
        parts = urlsplit(url or "")
        scheme, hostname = parts.scheme.lower(), parts.hostname
    except ValueError:
        raise Refusal("refused-scheme", str(url)) from None
    if scheme not in SCHEMES or not hostname:
        raise Refusal("refused-scheme", str(url))
    host = decoded_host(hostname)
    try:
        port = parts.port or SCHEMES[scheme]
    except ValueError:
        host = None
    if host is None:
        raise Refusal("refused-host", str(url))
    return scheme, host, port, _request_target(parts.path, parts.query)


def system_resolver(host: str, port: int) -> Addresses:
    """Every stream address of ``host`` from the system resolver, in its preference order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"{host}: does not resolve ({exc})") from None
    if not infos:
        raise Unresolvable(f"{host}: no address")
    return tuple((family, sockaddr) for family, _, _, _, sockaddr in infos)


class AddressPolicy:
    """Checks URLs and pins their addresses; resolutions are cached (bounded, ``cache_seconds`` old at most).

    ``allowed_networks`` (CIDR strings) are contacted even when not global, for
    an internal mirror or a test server; ``allow_private_network`` allows every
    address. ``resolver`` is injectable (the tests give names fixed answers).
    """

    def __init__(
        self,
        allow_private_network: bool = False,
        allowed_networks: Sequence[str] = (),
        resolver: Resolver = system_resolver,
        cache_size: int = 10_000,
        cache_seconds: float = 300.0,
    ) -> None:
        self.allow_private_network = allow_private_network
        self.allowed_networks = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)
        self._resolver = resolver
        self._cache: OrderedDict[tuple[str, int], tuple[float, Addresses]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ``ip`` may not be contacted under this policy (None: it may)."""
        return None if self.allow_private_network else address_refusal(ip, self.allowed_networks)

    def resolve(self, host: str, port: int) -> Addresses:
        """The addresses of ``host`` (an IP literal is its own); raises :class:`Unresolvable`."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            return ((family, (host, port) if ip.version == 4 else (host, port, 0, 0)),)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get((host, port))
            if cached is not None and now - cached[0] < self._cache_seconds:
                self._cache.move_to_end((host, port))
                return cached[1]
        addresses = self._resolver(host, port)
        with self._lock:
            self._cache[(host, port)] = (now, addresses)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return addresses

    def check(self, url: str | None) -> Target:
        """The checked :class:`Target` of ``url``; raises :class:`Refusal` or :class:`Unresolvable`."""
        scheme, host, port, request_target = parse_url(url)
        addresses = self.resolve(host, port)
        for _, sockaddr in addresses:
            reason = self.refusal(ipaddress.ip_address(sockaddr[0]))
            if reason is not None:
                raise Refusal(reason, str(url))
        return Target(scheme, host, port, request_target, addresses)
