"""One URL fetched against real loopback servers: checked redirects, pinning, deadline, body cap, TLS.

127.0.0.1 plays a public host (``allowed_networks``) and 127.0.0.2 a private
one, so a redirect from one to the other is the SSRF the policy must stop;
no real private address is ever contacted.
"""

from __future__ import annotations

import socket
import ssl

import pytest
import trustme

from laion_hf.download.addresses import AddressPolicy, Unresolvable
from laion_hf.download.fetch import Fetcher, FetchLimits
from laion_hf.download.options import DownloadOptions
from laion_hf.download.optout import OPT_OUT_MESSAGE, HeaderOptOut
from laion_hf.testing.image_server import TERABYTE, ImageServer, Route

IMAGE = bytes(range(256)) * 48  # 12 KiB; the fetcher does not look inside
PUBLIC = ("127.0.0.1/32",)


def limits(**options) -> FetchLimits:
    """The limits a download with ``options`` uses (default cap, 10 redirects...), 5 s per read, 20 s per request."""
    return DownloadOptions(**{"timeout": 5, "deadline": 20, **options}).limits


def fetcher(bounds: FetchLimits | None = None, **policy) -> Fetcher:
    """A fetcher for which 127.0.0.1 is public, with img2dataset's X-Robots-Tag directives."""
    return Fetcher(AddressPolicy(**{"allowed_networks": PUBLIC, **policy}), bounds or limits(), HeaderOptOut())


@pytest.fixture
def public():
    with ImageServer() as server:
        yield server


@pytest.fixture
def private(public):
    """A second host on the public one's port, at an address the policy refuses."""
    with ImageServer(host="127.0.0.2", port=public.port) as server:
        yield server


def test_a_good_image_is_fetched_whole(public):
    url = public.image("/a.png", IMAGE)
    with fetcher() as f:
        fetched = f.fetch(url)
    assert (fetched.data, fetched.reason, fetched.url) == (IMAGE, None, url)


def test_a_redirect_to_a_refused_host_is_not_followed(public, private):
    private.image("/secret.png", IMAGE)
    url = public.redirect("/moved.png", private.url("/secret.png"))
    with fetcher() as f:
        fetched = f.fetch(url)
    assert fetched.data is None and fetched.refused
    assert fetched.reason == "refused-loopback"
    assert fetched.message == (f"redirect to {private.url('/secret.png')} not followed: the host resolves to a "
                               "loopback address (--allow-private-network to fetch it)")
    assert public.requests == ["/moved.png"]
    assert private.requests == []


def test_a_redirect_to_another_allowed_host_is_followed_with_its_own_host_header(public):
    with ImageServer() as other:
        other.image("/there.png", IMAGE)
        url = public.redirect("/here.png", other.url("/there.png", host="localhost"))
        with fetcher() as f:
            fetched = f.fetch(url)
        assert fetched.data == IMAGE and fetched.url == other.url("/there.png", host="localhost")
        assert public.hosts == [f"127.0.0.1:{public.port}"]
        assert other.hosts == [f"localhost:{other.port}"]


def test_redirects_are_bounded(public):
    public.image("/end.png", IMAGE)
    ten = public.redirect_chain("/ten", 10, "/end.png")
    eleven = public.redirect_chain("/eleven", 11, "/end.png")
    with fetcher() as f:
        assert f.fetch(ten).data == IMAGE
        public.clear_requests()
        too_many = f.fetch(eleven)
    assert (too_many.reason, too_many.message) == ("too-many-redirects", "more than 10 redirects")
    assert len(public.requests) == 11 and "/end.png" not in public.requests


def test_a_dripping_server_cannot_hold_a_fetch_past_its_deadline(public):
    url = public.drip("/drip.png", IMAGE, interval=0.01, give_up_after=300)  # each read is quick; the whole takes 2 min
    with fetcher(limits(timeout=1, deadline=2)) as f:
        fetched = f.fetch(url)
    assert (fetched.data, fetched.reason, fetched.message) == (None, "deadline", "no complete answer within the 2 s deadline")
    assert public.bytes_sent("/drip.png") < len(IMAGE)


def test_a_silent_server_is_a_timeout(public):
    url = public.slow("/slow.png", IMAGE, delay=5)
    with fetcher(limits(timeout=0.5, deadline=20)) as f:
        fetched = f.fetch(url)
    assert (fetched.reason, fetched.message) == ("timeout", "timed out")


def test_a_declared_terabyte_is_refused_before_reading(public):
    url = public.declares("/tb.jpg", TERABYTE)
    with fetcher() as f:
        fetched = f.fetch(url)
    assert fetched.reason == "body-too-large"
    assert fetched.message == "Content-Length 1,000,000,000,000 bytes is over the 268,435,452-byte limit; not read"


def test_an_undeclared_body_is_abandoned_at_the_cap(public):
    url = public.endless("/endless.jpg", 256 << 20)
    with fetcher(limits(timeout=5, deadline=20, max_body_bytes=1 << 20)) as f:
        fetched = f.fetch(url)
    assert (fetched.reason, fetched.message) == ("body-too-large", "body over the 1,048,576-byte limit; stopped reading")
    assert public.bytes_sent("/endless.jpg") < 64 << 20  # the client hung up; the server never sent it all


def test_the_connection_goes_to_the_checked_address_with_the_name_in_the_host_header(public, private):
    """DNS rebinding: the name resolves to an allowed address once, then to a refused one."""
    public.image("/a.png", IMAGE)
    private.image("/a.png", b"private")
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2"])
    calls = []

    def rebinding(host: str, port: int):
        calls.append(host)
        return ((socket.AF_INET, (next(answers), port)),)

    with fetcher(resolver=rebinding, cache_seconds=0) as f:
        first = f.fetch(public.url("/a.png", host="images.test"))
        second = f.fetch(public.url("/a.png", host="images.test"))
    assert first.data == IMAGE and calls == ["images.test", "images.test"]
    assert public.hosts == [f"images.test:{public.port}"]
    assert (second.reason, second.refused) == ("refused-loopback", True)
    assert private.requests == []


def test_a_name_that_does_not_resolve_is_a_counted_failure():
    def nowhere(host: str, port: int):
        raise Unresolvable(f"{host}: does not resolve")

    with fetcher(resolver=nowhere) as f:
        fetched = f.fetch("http://nowhere.test/a.png")
    assert (fetched.reason, fetched.message, fetched.refused) == ("dns-error", "nowhere.test: does not resolve", False)


@pytest.fixture(scope="module")
def certificate_authority():
    return trustme.CA()


def test_https_is_pinned_with_the_name_as_server_name_and_certificate_identity(certificate_authority):
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("images.test").configure_cert(served)
    trusted = ssl.create_default_context()
    certificate_authority.configure_trust(trusted)
    with ImageServer(tls=served) as server:
        server.image("/a.png", IMAGE)
        policy = AddressPolicy(allowed_networks=PUBLIC, resolver=lambda host, port: ((socket.AF_INET, ("127.0.0.1", port)),))
        with Fetcher(policy, limits(timeout=5, deadline=20), tls=trusted) as f:
            by_name = f.fetch(server.url("/a.png", host="images.test"))
            by_address = f.fetch(server.url("/a.png"))  # the certificate is not for 127.0.0.1
        assert by_name.data == IMAGE
        assert server.hosts == [f"images.test:{server.port}"]
        assert by_address.reason == "tls-error" and "127.0.0.1" in by_address.message


@pytest.mark.parametrize(
    ("values", "token", "forbidden"),
    [
        (["noai"], None, True),
        (["noindex, nofollow"], None, True),
        (["nofollow"], None, False),
        (["otherbot: noai"], None, False),
        (["otherbot: noai"], "otherbot", True),
        (["OtherBot: NoImageAI"], "otherbot", True),
        (["mybot: noai"], "otherbot", False),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST"], None, False),
        (["nofollow", "noimageindex"], None, True),
    ],
)
def test_x_robots_tag_directives(values, token, forbidden):
    assert HeaderOptOut(tokens=[token] if token else []).forbids(values) is forbidden


def test_x_robots_tag_opt_out_is_decided_before_the_body(public):
    url = public.route("/noai.jpg", Route(content_type="image/jpeg", headers=(("X-Robots-Tag", "noai"),), stream_bytes=64 << 20))
    with fetcher() as f:
        fetched = f.fetch(url)
    assert (fetched.reason, fetched.message, fetched.opted_out) == ("x-robots-tag:noai", f"{OPT_OUT_MESSAGE}: X-Robots-Tag: noai", True)
    assert public.bytes_sent("/noai.jpg") < 32 << 20
