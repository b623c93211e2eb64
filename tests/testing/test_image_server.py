"""The loopback image server answers each route as the web would, and logs every request."""

from __future__ import annotations

import io
import socket
import urllib.error
import urllib.request

import pytest
from PIL import Image

from laion_hf.testing.image_server import LAION_MAX_PIXELS, ImageServer, corrupt_image, huge_png


def _png(size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _get(url: str, timeout: float = 5.0):
    return urllib.request.urlopen(url, timeout=timeout)


def test_good_image_is_served_byte_for_byte_and_logged():
    data = _png()
    with ImageServer() as server:
        url = server.image("/a.png", data)
        assert url.startswith("http://127.0.0.1:")
        with _get(url) as response:
            assert response.read() == data
            assert response.headers["Content-Type"] == "image/png"
        assert server.requests == ["/a.png"]


def test_missing_and_unknown_paths_are_404():
    with ImageServer() as server:
        server.missing("/gone.jpg")
        for path in ("/gone.jpg", "/never-registered.jpg"):
            with pytest.raises(urllib.error.HTTPError) as info:
                _get(server.url(path))
            assert info.value.code == 404
        assert server.request_counts() == {"/gone.jpg": 1, "/never-registered.jpg": 1}


def test_redirect_is_followed_to_the_target():
    data = _png()
    with ImageServer() as server:
        server.image("/real.png", data)
        url = server.redirect("/moved.png", "/real.png")
        with _get(url) as response:
            assert response.read() == data
        assert server.requests == ["/moved.png", "/real.png"]


def test_slow_route_times_out_a_client_that_waits_less():
    with ImageServer() as server:
        url = server.slow("/slow.png", _png(), delay=3.0)
        with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
            _get(url, timeout=0.3).read()


def test_no_ai_header_is_sent():
    with ImageServer() as server:
        url = server.no_ai("/private.png", _png(), directive="noimageai")
        with _get(url) as response:
            assert response.headers["X-Robots-Tag"] == "noimageai"


def test_huge_png_declares_too_many_pixels_but_is_small():
    data = huge_png()
    assert len(data) < 64 * 1024
    with pytest.warns(Image.DecompressionBombWarning), Image.open(io.BytesIO(data)) as image:  # header only
        width, height = image.size
    assert width * height > LAION_MAX_PIXELS


def test_corrupt_bytes_do_not_decode():
    with pytest.raises(Exception):
        with Image.open(io.BytesIO(corrupt_image())) as image:
            image.load()


def test_binds_loopback_only():
    with ImageServer() as server:
        assert server.base_url.startswith("http://127.0.0.1:")


def test_requests_are_logged_with_their_host_header():
    with ImageServer() as server:
        url = server.image("/a.png", _png())
        _get(url).read()
        _get(server.url("/a.png", host="localhost")).read()
        assert server.hosts == [f"127.0.0.1:{server.port}", f"localhost:{server.port}"]


def test_redirect_chain_leads_to_the_target_hop_by_hop():
    data = _png()
    with ImageServer() as server:
        server.image("/end.png", data)
        url = server.redirect_chain("/start", 3, "/end.png")
        with _get(url) as response:
            assert response.read() == data
        assert server.requests == ["/start", "/start/1", "/start/2", "/end.png"]


def test_drip_sends_the_response_one_byte_at_a_time_then_gives_up():
    with ImageServer() as server:
        server.drip("/drip.png", b"x" * 1000, interval=0.05, give_up_after=0.5)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /drip.png HTTP/1.0\r\nHost: x\r\n\r\n")
            first = sock.recv(100)
            received = first
            while chunk := sock.recv(100):
                received += chunk
        assert first == b"H"
        assert len(received) > 1  # ... and it hung up before the headers were even complete
        assert b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n".startswith(received)
        assert server.bytes_sent("/drip.png") == len(received)


def test_declared_length_and_endless_body():
    with ImageServer() as server:
        server.declares("/tb.jpg", length=10**12, sent=1000)
        server.endless("/endless.jpg", size=300_000)
        with _get(server.url("/tb.jpg")) as response:
            assert response.headers["Content-Length"] == "1000000000000"
            assert response.read(1000) == bytes(1000)
        with _get(server.url("/endless.jpg")) as response:
            assert response.headers["Content-Length"] is None
            assert response.read() == bytes(300_000)


def test_a_second_loopback_host_and_only_loopback():
    with ImageServer() as first, ImageServer(host="127.0.0.2", port=first.port) as second:
        second.image("/b.png", _png())
        assert second.base_url == f"http://127.0.0.2:{first.port}"
        _get(second.url("/b.png")).read()
        assert (first.requests, second.requests) == ([], ["/b.png"])
    with pytest.raises(ValueError, match="loopback addresses only"):
        ImageServer(host="10.0.0.1")


def test_tls_serves_the_certificate_it_is_given():
    import ssl

    import trustme

    authority = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(served)
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    data = _png()
    with ImageServer(tls=served) as server:
        url = server.image("/a.png", data).replace("127.0.0.1", "localhost")
        assert url.startswith("https://localhost:")
        with urllib.request.urlopen(url, timeout=5, context=trusted) as response:
            assert response.read() == data
