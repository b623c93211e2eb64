"""The loopback image server answers each route as the web would, and logs every request."""

from __future__ import annotations

import io
import socket
import urllib.error
import urllib.request

import pytest
from PIL import Image

from laion_hf.demo.image_server import LAION_MAX_PIXELS, ImageServer, corrupt_image, huge_png


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
