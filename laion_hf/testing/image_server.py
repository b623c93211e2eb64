"""A loopback HTTP(S) image server that behaves like the web a LAION download meets.

The demo and the tests download from it instead of the internet: good images,
missing ones (404), slow ones (client timeouts), redirects and redirect
chains, images too small (< 5 KB) or too large (a valid PNG declaring more
than 89,478,484 pixels yet only kilobytes on the wire), corrupt bytes, images
whose response carries ``X-Robots-Tag: noai`` / ``noimageai``, and hostile
answers: a response dripped one byte at a time, a declared 1 TB
``Content-Length``, an endless body. A host can also say no: a robots.txt,
a ``/.well-known/tdmrep.json``, ``tdm-reservation`` headers, 429 answers with
``Retry-After``, or a request-rate limit of its own. Every request is logged
with its ``Host`` header and arrival time, the most requests it ever served at
once is kept, and the bytes sent per path are counted, so callers can assert
which URLs were fetched (e.g. that ``--retry-failed`` only re-fetches
failures, that refused addresses were never contacted, that robots.txt was
asked for once, that a client kept to its per-host limits) and that a client
stopped reading.

It binds a loopback address (127.0.0.1 unless told another, e.g. 127.0.0.2 for
a second "host"), on a free port unless given one, optionally with TLS, in a
background thread::

    with ImageServer() as server:
        url = server.image("/cat.jpg", jpeg_bytes)
        server.missing("/gone.jpg")
        ...
        server.requests  # ["/cat.jpg", ...]
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LAION_MAX_PIXELS = 89_478_484
TERABYTE = 10**12
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Route:
    """What the server answers on one path."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # seconds to wait before answering (longer than the client's timeout = a timeout)
    drip: float = 0.0  # seconds between single bytes of the whole response (status line included)
    drip_for: float = 30.0  # ... and the server hangs up after this long, so a client without a deadline fails
    declared_length: int | None = None  # a Content-Length to declare instead of the real one
    stream_bytes: int = 0  # zero bytes sent after ``body`` in chunks, with no Content-Length (unless declared)
    refusals: int = 0  # the first this many requests are answered 429 with ``Retry-After: retry_after``
    retry_after: str = "1"


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    path: str
    host: str | None  # the Host header
    time: float = 0.0  # arrival, time.monotonic()


@dataclass
class _State:
    routes: dict[str, Route] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)  # body and header bytes written, per path
    answered: Counter[str] = field(default_factory=Counter)  # requests per path so far (for ``refusals``)
    active: int = 0
    peak: int = 0  # the most requests in progress at once
    rate_limit: float | None = None  # requests a second this host accepts; more are answered 429
    last_accepted: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


def _content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_png(width: int = 20_000, height: int = 5_000) -> bytes:
    """A valid, all-black 1-bit PNG of ``width x height`` pixels (100 M by default) in ~15 KB.

    Rows of zeros compress about 1000:1, so the file is tiny while any decoder
    or size check sees a decompression-bomb-sized image.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed 1-bit pixels
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def corrupt_image() -> bytes:
    """Bytes that start like a JPEG and then are garbage: no decoder can read them."""
    return b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40


def _head(route: Route) -> bytes:
    """Status line and headers, written by hand so a drip can send them byte by byte."""
    lines = [f"HTTP/1.0 {route.status} {HTTPStatus(route.status).phrase}", f"Content-Type: {route.content_type}"]
    if route.declared_length is not None:
        lines.append(f"Content-Length: {route.declared_length}")
    elif not route.stream_bytes:
        lines.append(f"Content-Length: {len(route.body)}")
    lines.extend(f"{name}: {value}" for name, value in route.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Handler(BaseHTTPRequestHandler):
    server_version = "laion-hf-image-server"
    state: _State  # set on the per-server subclass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        path = self.path.split("?", 1)[0]
        now = time.monotonic()
        with self.state.lock:
            self.state.log.append(Request(path, self.headers.get("Host"), now))
            self.state.active += 1
            self.state.peak = max(self.state.peak, self.state.active)
            route = self.state.routes.get(path)
            answered = self.state.answered[path]
            self.state.answered[path] += 1
            too_fast = self.state.rate_limit is not None and now - self.state.last_accepted < 1 / self.state.rate_limit
            if not too_fast:
                self.state.last_accepted = now
        try:
            self._answer(path, route, answered, too_fast)
        finally:
            with self.state.lock:
                self.state.active -= 1

    def _answer(self, path: str, route: Route | None, answered: int, too_fast: bool) -> None:
        if route is None:
            route = Route(status=404, body=b"not found", content_type="text/plain")
        if too_fast or answered < route.refusals:
            route = Route(status=429, body=b"slow down", content_type="text/plain",
                          headers=(("Retry-After", route.retry_after if not too_fast else "1"),))
        if route.delay and self.state.stopping.wait(route.delay):
            return
        try:
            if route.drip:
                self._drip(path, _head(route) + route.body, route)
            else:
                self._send(path, _head(route) + route.body)
                for start in range(0, route.stream_bytes, _CHUNK):
                    if self.state.stopping.is_set():
                        return
                    self._send(path, bytes(min(_CHUNK, route.stream_bytes - start)))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client gave up (its timeout, deadline or size limit fired first)

    def _send(self, path: str, data: bytes) -> None:
        self.wfile.write(data)
        with self.state.lock:
            self.state.sent[path] += len(data)

    def _drip(self, path: str, data: bytes, route: Route) -> None:
        for ticks in range(len(data)):
            if ticks * route.drip > route.drip_for or self.state.stopping.wait(route.drip):
                return
            self._send(path, data[ticks : ticks + 1])

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature from http.server)
        """Silence per-request logging; the request log is :attr:`ImageServer.requests`."""


class ImageServer:
    """The routing table, the request log and the background HTTP server (a context manager)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None, rate_limit: float | None = None
    ) -> None:
        """``rate_limit``: requests a second the host accepts; a request sooner than ``1/rate_limit`` after the
        last accepted one is answered 429 with ``Retry-After: 1``."""
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{host}: the image server binds loopback addresses only")
        self._state = _State(rate_limit=rate_limit)
        handler = type("Handler", (_Handler,), {"state": self._state})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
            self._scheme = "https"
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> ImageServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="image-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._state.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    # -- addresses and the request log -------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"{self._scheme}://{self._httpd.server_address[0]}:{self.port}"

    def url(self, path: str, host: str | None = None) -> str:
        """The URL of ``path``; with ``host``, spelled with that host name (or spelling) instead of the address."""
        return (self.base_url if host is None else f"{self._scheme}://{host}:{self.port}") + path

    @property
    def requests(self) -> list[str]:
        """Paths requested so far, in arrival order (a copy)."""
        with self._state.lock:
            return [request.path for request in self._state.log]

    @property
    def hosts(self) -> list[str | None]:
        """The ``Host`` header of each request so far, in arrival order."""
        with self._state.lock:
            return [request.host for request in self._state.log]

    def bytes_sent(self, path: str) -> int:
        """Bytes written so far in answers to ``path`` (headers included)."""
        with self._state.lock:
            return self._state.sent[path]

    def request_counts(self) -> Counter[str]:
        return Counter(self.requests)

    @property
    def log(self) -> list[Request]:
        """Every request so far (path, Host header, arrival time), in arrival order (a copy)."""
        with self._state.lock:
            return list(self._state.log)

    @property
    def peak_concurrency(self) -> int:
        """The most requests this server was answering at once."""
        with self._state.lock:
            return self._state.peak

    def clear_requests(self) -> None:
        with self._state.lock:
            self._state.log.clear()
            self._state.sent.clear()
            self._state.peak = 0

    # -- the routing table -------------------------------------------------
    def route(self, path: str, route: Route) -> str:
        """Serve ``route`` on ``path`` (replacing any earlier route); returns its URL."""
        if not path.startswith("/"):
            raise ValueError(f"route paths start with '/': {path!r}")
        with self._state.lock:
            self._state.routes[path] = route
        return self.url(path)

    def image(self, path: str, data: bytes, headers: dict[str, str] | None = None) -> str:
        """A good image (any bytes the caller gives, served as they are)."""
        return self.route(path, Route(body=data, content_type=_content_type(data), headers=tuple((headers or {}).items())))

    def missing(self, path: str) -> str:
        """A 404 (any unregistered path is one too; this names it in the table)."""
        return self.route(path, Route(status=404, body=b"not found", content_type="text/plain"))

    def slow(self, path: str, data: bytes, delay: float) -> str:
        """An image answered only after ``delay`` seconds: a timeout for clients that wait less."""
        return self.route(path, Route(body=data, content_type=_content_type(data), delay=delay))

    def redirect(self, path: str, target: str, status: int = 302) -> str:
        """A redirect to ``target`` (a path on this server or an absolute URL)."""
        location = self.url(target) if target.startswith("/") else target
        return self.route(path, Route(status=status, headers=(("Location", location),), content_type="text/plain"))

    def redirect_chain(self, path: str, hops: int, target: str) -> str:
        """``hops`` redirects in a row, ``path`` -> ``path/1`` -> ... -> ``target``."""
        chain = [path, *(f"{path}/{i}" for i in range(1, hops))]
        for here, there in zip(chain, [*chain[1:], target]):
            self.redirect(here, there)
        return self.url(path)

    def drip(self, path: str, data: bytes, interval: float = 0.2, give_up_after: float = 30.0) -> str:
        """An image whose whole response comes one byte per ``interval`` (each read is quick; the whole never ends)."""
        return self.route(path, Route(body=data, content_type=_content_type(data), drip=interval, drip_for=give_up_after))

    def declares(self, path: str, length: int = TERABYTE, sent: int = 4 << 20) -> str:
        """A 200 declaring a ``Content-Length`` of ``length`` (1 TB by default), then sending ``sent`` zero bytes."""
        return self.route(path, Route(content_type="image/jpeg", declared_length=length, stream_bytes=sent))

    def endless(self, path: str, size: int = 256 << 20) -> str:
        """A 200 with no ``Content-Length`` whose body is ``size`` zero bytes (256 MiB by default)."""
        return self.route(path, Route(content_type="image/jpeg", stream_bytes=size))

    def no_ai(self, path: str, data: bytes, directive: str = "noai") -> str:
        """An image whose response forbids AI use with ``X-Robots-Tag: <directive>``."""
        return self.image(path, data, headers={"X-Robots-Tag": directive})

    def corrupt(self, path: str) -> str:
        """Bytes served as an image that do not decode."""
        return self.route(path, Route(body=corrupt_image(), content_type="image/jpeg"))

    def huge(self, path: str, width: int = 20_000, height: int = 5_000) -> str:
        """A valid PNG declaring ``width x height`` pixels (over LAION's 89,478,484 by default)."""
        return self.route(path, Route(body=huge_png(width, height), content_type="image/png"))

    # -- what a host says about being crawled --------------------------------
    def robots_txt(self, text: str | bytes, status: int = 200) -> str:
        """Serve ``/robots.txt`` (``status`` 404, 503... to answer without one)."""
        body = text.encode("utf-8") if isinstance(text, str) else text
        return self.route("/robots.txt", Route(status=status, body=body, content_type="text/plain"))

    def tdmrep(self, rules: list[dict[str, Any]] | str) -> str:
        """Serve ``/.well-known/tdmrep.json`` (W3C TDMRep) with ``rules`` (or any text, to test broken files)."""
        body = rules if isinstance(rules, str) else json.dumps(rules)
        return self.route("/.well-known/tdmrep.json", Route(body=body.encode("utf-8"), content_type="application/json"))

    def tdm_reserved(self, path: str, data: bytes, policy: str | None = None) -> str:
        """An image whose response reserves TDM rights: ``tdm-reservation: 1`` (and ``tdm-policy``)."""
        headers = {"tdm-reservation": "1", **({"tdm-policy": policy} if policy else {})}
        return self.image(path, data, headers=headers)

    def rate_limited(self, path: str, data: bytes, refusals: int = 1, retry_after: str = "1") -> str:
        """An image answered ``429 Too Many Requests`` with ``Retry-After`` the first ``refusals`` times."""
        return self.route(path, Route(body=data, content_type=_content_type(data), refusals=refusals, retry_after=retry_after))
