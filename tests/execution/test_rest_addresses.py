"""The address classifier of rest_executor: every range it refuses, the public addresses at
their edges, and IPv4 addresses hidden in IPv6 forms (mapped, compatible)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apflow_server.execution.rest.addresses import is_public, non_public_reason

REFUSED = [
    # IPv4
    ("0.0.0.0", "unspecified"),
    ("0.255.255.255", "unspecified"),
    ("10.0.0.0", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.0", "shared (carrier-grade NAT)"),
    ("100.127.255.255", "shared (carrier-grade NAT)"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("172.16.0.0", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.9", "reserved (IETF protocol assignments)"),
    ("192.0.2.1", "reserved (documentation)"),
    ("192.88.99.1", "reserved (6to4 relay)"),
    ("192.168.0.10", "private"),
    ("198.18.0.1", "reserved (benchmarking)"),
    ("198.19.255.255", "reserved (benchmarking)"),
    ("198.51.100.7", "reserved (documentation)"),
    ("203.0.113.9", "reserved (documentation)"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("::1%1", "loopback"),
    ("febf:ffff::1", "link-local"),
    ("fec0::1", "site-local"),
    ("fc00::1", "private (unique local)"),
    ("fdff:ffff::1", "private (unique local)"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("100::1", "reserved (discard)"),
    ("2001:db8::1", "reserved (documentation)"),
    ("3fff::1", "reserved (documentation)"),
    ("2001:2::1", "reserved (IETF protocol assignments)"),
    ("2001:10::1", "reserved (IETF protocol assignments)"),
    # Translation prefixes that carry an IPv4 address: refused whole, whatever they carry.
    ("64:ff9b::7f00:1", "NAT64"),
    ("64:ff9b::808:808", "NAT64"),
    ("64:ff9b:1::7f00:1", "NAT64 (local use)"),
    ("2002:7f00:1::1", "6to4"),
    ("2002:808:808::1", "6to4"),
    ("2001::1", "Teredo"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    # IPv4 addresses written as IPv6: judged by the IPv4 address inside.
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:169.254.169.254", "IPv4-mapped link-local"),
    ("::ffff:100.64.0.1", "IPv4-mapped shared (carrier-grade NAT)"),
    ("::ffff:224.0.0.1", "IPv4-mapped multicast"),
    ("::ffff:0.0.0.0", "IPv4-mapped unspecified"),
    ("::127.0.0.1", "IPv4-compatible loopback"),
    ("::10.1.2.3", "IPv4-compatible private"),
    ("::224.0.0.1", "IPv4-compatible multicast"),
    ("::0.0.0.2", "IPv4-compatible unspecified"),
    # Outside 2000::/3 and not one of the above.
    ("64:ff9b:2::1", "reserved"),
    ("4000::1", "reserved"),
    ("e000::1", "reserved"),
    ("::ffff:0:0:1", "reserved"),  # the IPv4-translated form (::ffff:0:a.b.c.d)
]

PUBLIC = [
    "1.1.1.1",
    "8.8.8.8",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.1",
    "192.167.255.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2000::1",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "3ffe::1",
    "::ffff:8.8.8.8",
    "::8.8.8.8",
]


@pytest.mark.parametrize(("text", "reason"), REFUSED, ids=[text for text, _ in REFUSED])
def test_non_public_addresses_are_refused_with_their_reason(text: str, reason: str) -> None:
    address = ip_address(text)
    assert non_public_reason(address) == reason
    assert not is_public(address)


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_are_allowed(text: str) -> None:
    address = ip_address(text)
    assert non_public_reason(address) is None
    assert is_public(address)


@given(st.ip_addresses())
def test_at_least_as_strict_as_the_standard_library(address: IPv4Address | IPv6Address) -> None:
    """What Python itself calls non-global (loopback, private, reserved...) is never allowed."""
    if not address.is_global:
        assert not is_public(address)


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_and_its_ipv6_forms_agree(address: IPv4Address) -> None:
    text = str(address)
    mapped, compatible = ip_address(f"::ffff:{text}"), ip_address(f"::{text}")
    assert is_public(mapped) == is_public(ip_address(text))
    if text not in {"0.0.0.0", "0.0.0.1"}:  # :: and ::1 are themselves
        assert is_public(compatible) == is_public(ip_address(text))
