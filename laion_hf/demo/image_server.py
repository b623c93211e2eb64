"""A loopback HTTP image server that behaves like the web a LAION download meets.

The demo and the tests download from it instead of the internet: good images,
missing ones (404), slow ones (client timeouts), redirects, images too small
(< 5 KB) or too large (a valid PNG declaring more than 89,478,484 pixels yet
only kilobytes on the wire), corrupt bytes, and images whose response carries
``X-Robots-Tag: noai`` / ``noimageai``. Every request is logged so callers can
assert which URLs were fetched (e.g. that ``--retry-failed`` only re-fetches
failures, or that refused private addresses were never contacted).

It binds 127.0.0.1 only, on a free port, and runs in a background thread::

    with ImageServer() as server:
        url = server.image("/cat.jpg", jpeg_bytes)
        server.missing("/gone.jpg")
        ...
        server.requests  # ["/cat.jpg", ...]
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LAION_MAX_PIXELS = 89_478_484


@dataclass(frozen=True)
class Route:
    """What the server answers on one path."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0  # seconds to wait before answering (longer than the client's timeout = a timeout)


@dataclass
class _State:
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
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


class _Handler(BaseHTTPRequestHandler):
    server_version = "laion-hf-image-server"
    state: _State  # set on the per-server subclass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        path = self.path.split("?", 1)[0]
        with self.state.lock:
            self.state.requests.append(path)
            route = self.state.routes.get(path)
        if route is None:
            route = Route(status=404, body=b"not found", content_type="text/plain")
        if route.delay and self.state.stopping.wait(route.delay):
            return
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Content-Length", str(len(route.body)))
        for name, value in route.headers:
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(route.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired first)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature from http.server)
        """Silence per-request logging; the request log is :attr:`ImageServer.requests`."""


class ImageServer:
    """The routing table, the request log and the background HTTP server (a context manager)."""

    def __init__(self) -> None:
        self._state = _State()
        handler = type("Handler", (_Handler,), {"state": self._state})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
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
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def requests(self) -> list[str]:
        """Paths requested so far, in arrival order (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    def request_counts(self) -> Counter[str]:
        return Counter(self.requests)

    def clear_requests(self) -> None:
        with self._state.lock:
            self._state.requests.clear()

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

    def no_ai(self, path: str, data: bytes, directive: str = "noai") -> str:
        """An image whose response forbids AI use with ``X-Robots-Tag: <directive>``."""
        return self.image(path, data, headers={"X-Robots-Tag": directive})

    def corrupt(self, path: str) -> str:
        """Bytes served as an image that do not decode."""
        return self.route(path, Route(body=corrupt_image(), content_type="image/jpeg"))

    def huge(self, path: str, width: int = 20_000, height: int = 5_000) -> str:
        """A valid PNG declaring ``width x height`` pixels (over LAION's 89,478,484 by default)."""
        return self.route(path, Route(body=huge_png(width, height), content_type="image/png"))
