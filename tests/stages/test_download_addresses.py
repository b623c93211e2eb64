"""The address policy: which hosts a download may contact, decided on what the fetcher will use."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from laion_hf.download.addresses import AddressPolicy, Refusal, Unresolvable, address_refusal, decoded_host, parse_url


def refusal(policy: AddressPolicy, url: str) -> str | None:
    try:
        policy.check(url)
    except Refusal as refused:
        return refused.reason
    return None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("93.184.216.34", None),
        ("2606:4700::1", None),
        ("127.0.0.1", "refused-loopback"),
        ("::1", "refused-loopback"),
        ("169.254.169.254", "refused-link-local"),  # cloud metadata
        ("fe80::1", "refused-link-local"),
        ("10.0.0.7", "refused-private"),
        ("192.168.1.1", "refused-private"),
        ("0.0.0.0", "refused-private"),
        ("100.100.100.200", "refused-private"),  # shared address space 100.64.0.0/10: Alibaba's metadata address
        ("100.64.0.1", "refused-private"),
        ("fec0::1", "refused-private"),  # deprecated site-local, still routed inside some networks
        ("fc00::1", "refused-private"),
        ("::ffff:127.0.0.1", "refused-loopback"),  # IPv4-mapped
        ("::ffff:10.1.2.3", "refused-private"),
        ("2002:7f00:1::1", "refused-loopback"),  # 6to4 around 127.0.0.1
        ("2002:a9fe:a9fe::1", "refused-link-local"),  # 6to4 around 169.254.169.254
        ("2002:5db8:d822::1", None),  # 6to4 around a global address
        ("64:ff9b::7f00:1", "refused-loopback"),  # NAT64 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "refused-link-local"),
        ("64:ff9b::5db8:d822", None),  # NAT64 of a global address: how IPv6-only hosts reach IPv4 servers
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "refused-private"),  # Teredo
        ("::7f00:1", "refused-reserved"),  # deprecated IPv4-compatible form
        ("ff02::1", "refused-reserved"),  # multicast
        ("224.0.0.1", "refused-reserved"),
        ("240.0.0.1", "refused-private"),
    ],
)
def test_address_rules(address, reason):
    assert address_refusal(ipaddress.ip_address(address)) == reason


def test_allowed_networks_open_only_what_they_name():
    allowed = [ipaddress.ip_network("127.0.0.1/32")]
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert address_refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None  # the same address, mapped
    assert address_refusal(ipaddress.ip_address("127.0.0.2"), allowed) == "refused-loopback"
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), allowed) == "refused-private"


@pytest.mark.parametrize(
    ("hostname", "decoded"),
    [
        ("example.org", "example.org"),
        ("Example.ORG.", "example.org"),
        ("%31%32%37.0.0.1", "127.0.0.1"),
        ("127%2e0%2e0%2e1", "127.0.0.1"),
        ("product_images_wc.s3.amazonaws.com", "product_images_wc.s3.amazonaws.com"),  # real LAION host
        ("bücher.de", "xn--bcher-kva.de"),
        ("::1", "::1"),
        ("exa mple.com", None),
        ("a..b", None),
        ("evil.com%00.example.org", None),
        ("x" * 64 + ".com", None),
        ("%zz", None),
    ],
)
def test_hosts_are_decoded_as_the_fetcher_uses_them(hostname, decoded):
    assert decoded_host(hostname) == decoded


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("http://example.org/a.jpg", ("http", "example.org", 80, "/a.jpg")),
        ("https://EXAMPLE.org:443/a b.jpg?x=1&y=é", ("https", "example.org", 443, "/a%20b.jpg?x=1&y=%C3%A9")),
        ("http://example.org", ("http", "example.org", 80, "/")),
        ("http://user:secret@example.org:8080/a.jpg#frag", ("http", "example.org", 8080, "/a.jpg")),
        ("http://[::1]:81/a.jpg", ("http", "::1", 81, "/a.jpg")),
    ],
)
def test_parse_url(url, parts):
    assert parse_url(url) == parts


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://93.184.216.34/a.jpg", "refused-scheme"),
        ("file:///etc/passwd", "refused-scheme"),
        ("not a url", "refused-scheme"),
        (None, "refused-scheme"),
        ("http://[::1/a.jpg", "refused-scheme"),
        ("http://exa mple.com/a.jpg", "refused-host"),
        ("http://example.org:99999/a.jpg", "refused-host"),
        ("http://127.0.0.1:8080/a.jpg", "refused-loopback"),
        ("http://%31%32%37.0.0.1:8080/", "refused-loopback"),
        ("http://127%2e0%2e0%2e1:8080/", "refused-loopback"),
        ("http://localhost/a.jpg", "refused-loopback"),  # /etc/hosts, no DNS traffic
        ("http://[::1]/a.jpg", "refused-loopback"),
        ("http://10.0.0.7/a.jpg", "refused-private"),
        ("http://192.168.1.1/a.jpg", "refused-private"),
        ("http://0.0.0.0/a.jpg", "refused-private"),
        ("http://[::ffff:10.1.2.3]/a.jpg", "refused-private"),
        ("http://[2002:a9fe:a9fe::1]/a.jpg", "refused-link-local"),
        ("https://169.254.169.254/latest/meta-data", "refused-link-local"),
        ("http://100.100.100.200/latest/meta-data", "refused-private"),
        ("http://93.184.216.34/a.jpg", None),
    ],
)
def test_policy_refuses_before_any_connection(url, reason):
    assert refusal(AddressPolicy(), url) == reason


def test_opt_in_still_refuses_other_schemes_and_bad_hosts():
    policy = AddressPolicy(allow_private_network=True)
    assert [refusal(policy, u) for u in ("http://127.0.0.1/a.jpg", "file:///etc/passwd", "http://a..b/")] == [
        None, "refused-scheme", "refused-host",
    ]


def test_a_name_is_refused_if_any_of_its_addresses_is_not_global():
    answers = {"mixed.test": ((socket.AF_INET, ("93.184.216.34", 80)), (socket.AF_INET, ("10.0.0.1", 80)))}
    policy = AddressPolicy(resolver=lambda host, port: answers[host])
    assert refusal(policy, "http://mixed.test/a.jpg") == "refused-private"


def test_a_name_that_does_not_resolve_is_not_allowed():
    def resolver(host: str, port: int):
        raise Unresolvable(f"{host}: does not resolve")

    with pytest.raises(Unresolvable, match="nowhere.test"):
        AddressPolicy(resolver=resolver).check("http://nowhere.test/a.jpg")


def test_checked_addresses_are_the_target_and_resolutions_are_cached():
    calls = []

    def resolver(host: str, port: int):
        calls.append(host)
        return ((socket.AF_INET, ("93.184.216.34", port)),)

    policy = AddressPolicy(resolver=resolver)
    target = policy.check("https://images.test/a.jpg")
    assert (target.scheme, target.host, target.port, target.request_target) == ("https", "images.test", 443, "/a.jpg")
    assert target.addresses == ((socket.AF_INET, ("93.184.216.34", 443)),)
    policy.check("https://images.test/b.jpg")
    assert calls == ["images.test"]
